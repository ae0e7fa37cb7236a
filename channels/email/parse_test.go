package email

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/therapistinbox/gateway/channels/email/mailtest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// parseOurs is the practice address the fixtures are sent to.
var parseOurs = ParseOptions{Ours: []string{"practice@example.org"}}

// ourAck is the Message-ID our sender gave the message most fixtures
// answer or bounce.
const ourAck = "1L9XQ2Z8KD3Q.2T6WQ8RZJX4PM@example.org"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "mail", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// noteRE lists every form a note may take; anything else could carry
// client content.
var noteRE = regexp.MustCompile(`^(?:` +
	`broken MIME: [A-Za-z0-9 -]+(?:; open the mailbox to read it)?` +
	`|over the size limit \(\d+ MB\); open the mailbox to read it` +
	`|unknown charset [A-Za-z0-9._:+-]*` +
	`|text over the size limit was cut` +
	`|unreadable Date header` +
	`|unreadable From header; (?:sender read by best effort|no sender address)` +
	`|no From header; sender taken from (?:Sender|Return-Path)` +
	`|no sender address` +
	`|automatic mail \([a-z0-9:/ ._+-]+\): not acknowledged` +
	`|delivery failure report(?: \([245]\.\d+\.\d+\))?(?:; the failed message is not identified)?` +
	`|delivery delay report; not a failure yet` +
	`|delivery report` +
	`)$`)

// checkInbound asserts what must hold for any message, however broken,
// and that no note repeats the sender or the subject.
func checkInbound(t testing.TB, in envelope.Inbound) {
	t.Helper()
	checkShape(t, in)
	for _, n := range in.Notes {
		for _, secret := range []string{in.From, in.FromName, in.Subject} {
			if len(secret) >= 4 && strings.Contains(n, secret) {
				t.Errorf("note %q carries client content %q", n, secret)
			}
		}
	}
}

// checkShape asserts the invariants the fuzz test checks too.
func checkShape(t testing.TB, in envelope.Inbound) {
	t.Helper()
	if in.Channel != envelope.Email {
		t.Errorf("Channel = %q, want email", in.Channel)
	}
	if in.ProviderID == "" {
		t.Errorf("empty ProviderID")
	}
	for field, s := range map[string]string{"Subject": in.Subject, "Text": in.Text, "Original": in.Original,
		"From": in.From, "FromName": in.FromName, "To": in.To, "ProviderID": string(in.ProviderID), "MessageID": in.MessageID} {
		if !utf8.ValidString(s) {
			t.Errorf("%s is not valid UTF-8: %q", field, s)
		}
	}
	if strings.Contains(in.Text, "\r") {
		t.Errorf("Text has a carriage return")
	}
	for _, a := range in.Attachments {
		if !utf8.ValidString(a.Name) || strings.ContainsAny(a.Name, "/\\\x00") || a.Size < 0 {
			t.Errorf("bad attachment %+v", a)
		}
	}
	for _, n := range in.Notes {
		if !noteRE.MatchString(n) {
			t.Errorf("unexpected note form %q", n)
		}
	}
}

func TestParseFixtures(t *testing.T) {
	const auto = ": not acknowledged"
	tests := []struct {
		file        string
		from, name  string
		to          string
		subject     string
		automated   bool
		bounceOf    string
		status      string
		contains    []string // in Text
		absent      []string // not in Text
		original    string   // in Original; "" means Original must be empty
		attachments []envelope.Attachment
		notes       []string
		hashID      bool // ProviderID derived from the content
		refs        []string
	}{
		{
			file: "plain_utf8.eml", from: "sam@example.net", name: "Sam Example", to: "practice@example.org",
			subject:  "Can we move Tuesday?",
			contains: []string{"Could we move Tuesday's session to 4pm?", "overwhelmed\nthis week — nothing urgent", "Sam"},
		},
		{
			file: "autoreply_gmail_vacation.eml", automated: true, subject: "Away until March 10",
			contains: []string{"travelling until March 10"}, absent: []string{"<div"},
			notes: []string{"automatic mail (auto-submitted: auto-replied)" + auto},
			refs:  []string{"<" + ourAck + ">"},
		},
		{
			file: "autoreply_outlook_oof.eml", automated: true,
			contains: []string{"I am out of the office until Monday, March 10, and will reply when I return."},
			notes:    []string{"automatic mail (auto-submitted: auto-generated)" + auto},
		},
		{
			file: "autoreply_yahoo.eml", automated: true, contains: []string{"on vacation"},
			notes: []string{"automatic mail (x-autoreply)" + auto},
		},
		{
			file: "autoreply_icloud.eml", automated: true, contains: []string{"I’m away this week"},
			notes: []string{"automatic mail (auto-submitted: auto-replied)" + auto},
		},
		{
			file: "autoreply_zoho.eml", automated: true, contains: []string{"out of office"},
			notes: []string{"automatic mail (auto-submitted: auto-replied)" + auto},
		},
		{
			file: "autoreply_ticketing.eml", automated: true, from: "support@helpdesk.example.com",
			contains: []string{"#48213"},
			notes:    []string{"automatic mail (auto-submitted: auto-generated)" + auto},
		},
		{
			file: "noreply_notification.eml", automated: true, from: "no-reply@booking.example.com",
			notes: []string{"automatic mail (sender: no-reply)" + auto},
		},
		{
			file: "dsn_postfix.eml", automated: true, bounceOf: ourAck, status: "5.1.1",
			from: "MAILER-DAEMON@mail.example.org", name: "Mail Delivery System",
			contains: []string{"could not\nbe delivered"}, absent: []string{"Reporting-MTA", "Message-Id"},
			notes: []string{"delivery failure report (5.1.1)", "automatic mail (auto-submitted: auto-replied)" + auto},
		},
		{
			file: "dsn_exim.eml", automated: true, bounceOf: "1L9XQ2Z8KD3R.EXIM00000001@example.org", status: "5.1.1",
			contains: []string{"This is a permanent error", "No such user here"},
			absent:   []string{"copy of the message", "Dr. Rivera will read it"},
			original: "Dr. Rivera will read it",
			notes:    []string{"delivery failure report (5.1.1)", "automatic mail (auto-submitted: auto-replied)" + auto},
		},
		{
			file: "dsn_gmail.eml", automated: true, bounceOf: "1L9XQ2Z8KD3S.GMAIL0000001@example.org", status: "5.1.1",
			contains: []string{"** Address not found **"}, absent: []string{"Wednesday morning", "<h1>"},
			attachments: []envelope.Attachment{{Name: "icon.png", Type: "image/png", Size: 70}},
			notes:       []string{"delivery failure report (5.1.1)", "automatic mail (auto-submitted: auto-replied)" + auto},
		},
		{
			file: "dsn_exchange.eml", automated: true, bounceOf: "1L9XQ2Z8KD3T.EXCH0000001@example.org", status: "5.1.10",
			from: "postmaster@outlook.com", contains: []string{"couldn't be delivered"},
			notes: []string{"delivery failure report (5.1.10)", "automatic mail (auto-submitted: auto-replied)" + auto},
		},
		{
			file: "dsn_exchange_text.eml", automated: true, bounceOf: "1L9XQ2Z8KD3W.EXTXT000001@example.org", status: "5.1.1",
			contains:    []string{"did not reach some or all"},
			attachments: []envelope.Attachment{{Type: "message/rfc822", Size: 285}},
			notes:       []string{"delivery failure report (5.1.1)", "automatic mail (empty return-path)" + auto},
		},
		{
			file: "dsn_qmail.eml", automated: true, bounceOf: "1L9XQ2Z8KD3U.QMAIL000001@example.org", status: "5.1.1",
			hashID: true, contains: []string{"qmail-send program"}, absent: []string{"Below this line"},
			original: "Message-ID: <1L9XQ2Z8KD3U.QMAIL000001@example.org>",
			notes:    []string{"delivery failure report (5.1.1)", "automatic mail (empty return-path)" + auto},
		},
		{
			file: "dsn_delayed.eml", automated: true, contains: []string{"THIS IS A WARNING ONLY"},
			notes: []string{"delivery delay report; not a failure yet", "automatic mail (auto-submitted: auto-generated)" + auto},
		},
		{
			file: "read_receipt.eml", automated: true, contains: []string{"Your message was read"},
			notes: []string{"automatic mail (multipart/report)" + auto},
		},
		{
			file: "list_mailman.eml", automated: true, contains: []string{"supervision group moves to Friday"},
			notes: []string{"automatic mail (precedence: list)" + auto},
		},
		{
			file: "newsletter_html.eml", automated: true, contains: []string{"5 ideas for a calmer week\n\nTake a walk."},
			notes: []string{"automatic mail (list-unsubscribe)" + auto},
		},
		{
			file: "own_address.eml", automated: true, from: "practice@example.org",
			notes: []string{"automatic mail (our own address)" + auto},
		},
		{
			file: "empty_return_path.eml", automated: true,
			notes: []string{"automatic mail (empty return-path)" + auto},
		},
		{
			// A person's Outlook mail through a distribution list carries a
			// partial X-Auto-Response-Suppress: still a person.
			file: "outlook_dl_person.eml", to: "practice@example.org", // from Delivered-To
			contains: []string{"still at 4?"},
		},
		{
			file: "html_only.eml", subject: "Thursday",
			contains: []string{"Hi,", "Can we talk on Thursday? I'm struggling & could use the time.", "Thanks,\nDana"},
			absent:   []string{"<", "color: red", "var x"},
		},
		{
			file: "windows1252.eml", subject: "“Thursday” – is it €90?",
			contains: []string{"“It’s fine” – the fee is €90, isn’t it?"},
		},
		{
			file: "iso88591_qp.eml", name: "Jürgen Müller", subject: "Grüße und eine Frage",
			contains: []string{"Grüße, können wir verschieben?"},
		},
		{
			file: "utf8_qp.eml", name: "María García", subject: "Mañana no puedo",
			contains: []string{"mañana no puedo ir a la sesión. ¿Podemos cambiarla al jueves? Lo siento — gracias."},
		},
		{
			file: "base64.eml", subject: "Can’t sleep", contains: []string{"Hi — I can’t sleep again. Could we talk this week? 😔"},
		},
		{
			file: "broken_bad_boundary.eml", contains: []string{"The letter from the court came today"},
			absent:      []string{"ACTUAL-BOUNDARY", "JVBERi0"},
			attachments: []envelope.Attachment{{Name: "letter.pdf", Type: "application/pdf", Size: 61}},
			notes:       []string{"broken MIME: wrong multipart boundary"},
		},
		{
			file: "broken_truncated.eml", contains: []string{"Here is the scan you asked for."},
			attachments: []envelope.Attachment{{Name: "scan.jpg", Type: "image/jpeg", Size: 114}},
			notes:       []string{"broken MIME: truncated multipart"},
		},
		{
			file: "broken_bad_base64.eml", contains: []string{"I wanted to tell you something important before Thursday."},
			notes: []string{"broken MIME: bad base64"},
		},
		{
			file: "broken_unknown_charset.eml", contains: []string{"Can we talk on Thursday? Caf\uFFFD at 4?"},
			notes: []string{"unknown charset x-klingon-7"},
		},
		{
			file: "broken_unknown_encoding.eml", contains: []string{"Plain words sent with an odd encoding label."},
			notes: []string{"broken MIME: unknown transfer encoding"},
		},
		{
			file: "broken_header_lines.eml", from: "sam@example.net", subject: "Broken headers but readable",
			contains: []string{"The body is still here."}, absent: []string{"not a header"},
			notes: []string{"broken MIME: malformed header line"},
		},
		{
			file: "broken_8bit_headers.eml", from: "rene@example.fr", name: "René Dupont",
			subject: "Séance de jeudi – possible ?", contains: []string{"la séance de jeudi"},
			notes: []string{"unreadable From header; sender read by best effort"},
		},
		{
			file: "broken_from.eml", from: "sam@example.net",
			notes: []string{"unreadable From header; sender read by best effort"},
		},
		{
			file: "no_from.eml", from: "sam@example.net", name: "Sam Example",
			notes: []string{"no From header; sender taken from Sender"},
		},
		{
			file: "no_message_id.eml", hashID: true, contains: []string{"no Message-ID header"},
		},
		{
			file: "mbox_cc.eml", to: "practice@example.org", subject: "Copying the practice",
		},
		{
			file: "reply_gmail.eml", subject: "Re: Can we move Tuesday?",
			contains: []string{"Actually it got worse tonight, I keep thinking about not being here."},
			absent:   []string{"wrote:", "call 988", "Wednesday morning"},
			original: "> If you are in danger, call 988.",
			refs:     []string{"<CAF1sam0001@mail.example.net>", "<" + ourAck + ">"},
		},
		{
			file: "reply_outlook_original.eml", contains: []string{"I can't make Tuesday, can we do Friday instead?\n\nJordan"},
			absent: []string{"Original Message", "Wednesday morning", "Sent:"}, original: "-----Original Message-----",
			refs: []string{"<" + ourAck + ">"},
		},
		{
			file: "reply_outlook_separator.eml", contains: []string{"Thursday at 4 works for me."},
			absent: []string{"Get Outlook", "_____", "Sent:", "Wednesday morning"}, original: "Get Outlook for iOS",
		},
		{
			file: "reply_apple.eml", contains: []string{"Running ten minutes late, sorry!"},
			absent: []string{"Sent from my iPhone", "wrote:", "Wednesday"}, original: "Sent from my iPhone",
		},
		{
			file: "reply_spanish.eml", name: "Lucía Pérez", contains: []string{"Perfecto, nos vemos el jueves."},
			absent: []string{"Enviado desde mi iPhone", "escribió", "miércoles"}, original: "escribió:",
		},
		{
			file: "signature.eml", contains: []string{"February invoice"}, absent: []string{"Senior Analyst", "555"},
			original: "-- \nSam Example",
		},
		{
			file: "attachments.eml", contains: []string{"Here are the documents. The photo is of the form."},
			absent: []string{"<p>", "iVBOR"},
			attachments: []envelope.Attachment{
				{Name: "form-photo.png", Type: "image/png", Size: 70},
				{Name: "Befund März.pdf", Type: "application/pdf", Size: 3016},
				{Name: "forwarded.eml", Type: "message/rfc822", Size: 159},
			},
		},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			in := Parse(readFixture(t, tt.file), 0, parseOurs)
			checkInbound(t, in)
			if tt.from != "" && in.From != tt.from {
				t.Errorf("From = %q, want %q", in.From, tt.from)
			}
			if tt.name != "" && in.FromName != tt.name {
				t.Errorf("FromName = %q, want %q", in.FromName, tt.name)
			}
			if tt.to != "" && in.To != tt.to {
				t.Errorf("To = %q, want %q", in.To, tt.to)
			}
			if tt.subject != "" && in.Subject != tt.subject {
				t.Errorf("Subject = %q, want %q", in.Subject, tt.subject)
			}
			if in.Automated != tt.automated {
				t.Errorf("Automated = %v, want %v", in.Automated, tt.automated)
			}
			if in.BounceOf != tt.bounceOf || in.BounceStatus != tt.status {
				t.Errorf("bounce = %q %q, want %q %q", in.BounceOf, in.BounceStatus, tt.bounceOf, tt.status)
			}
			for _, s := range tt.contains {
				if !strings.Contains(in.Text, s) {
					t.Errorf("Text does not contain %q:\n%s", s, in.Text)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(in.Text, s) {
					t.Errorf("Text contains %q:\n%s", s, in.Text)
				}
			}
			if tt.original == "" && in.Original != "" {
				t.Errorf("Original = %q, want empty", in.Original)
			}
			if tt.original != "" && (!strings.Contains(in.Original, tt.original) || !strings.Contains(in.Original, in.Text)) {
				t.Errorf("Original lacks %q or the text:\n%s", tt.original, in.Original)
			}
			if len(in.Attachments) != 0 || len(tt.attachments) != 0 {
				if !reflect.DeepEqual(in.Attachments, tt.attachments) {
					t.Errorf("Attachments = %+v, want %+v", in.Attachments, tt.attachments)
				}
			}
			if len(in.Notes) != 0 || len(tt.notes) != 0 {
				if !reflect.DeepEqual(in.Notes, tt.notes) {
					t.Errorf("Notes = %q, want %q", in.Notes, tt.notes)
				}
			}
			if got := strings.HasPrefix(string(in.ProviderID), "sha256:"); got != tt.hashID {
				t.Errorf("ProviderID = %q, content-derived %v, want %v", in.ProviderID, got, tt.hashID)
			}
			if !tt.hashID && (in.MessageID != "<"+string(in.ProviderID)+">") {
				t.Errorf("MessageID = %q, ProviderID = %q: want the id in brackets", in.MessageID, in.ProviderID)
			}
			if tt.hashID && in.MessageID != "" {
				t.Errorf("MessageID = %q, want empty", in.MessageID)
			}
			if tt.refs != nil && !reflect.DeepEqual(in.References, tt.refs) {
				t.Errorf("References = %q, want %q", in.References, tt.refs)
			}
		})
	}
	// Every fixture in testdata is asserted on.
	files, _ := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	if len(files) < 30 {
		t.Errorf("%d fixtures, want at least 30", len(files))
	}
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("fixture %s has no table entry", filepath.Base(f))
		}
	}
}

// hugeMessage is a message with a text part and an attachment of n bytes,
// built in memory so the repository stays small.
func hugeMessage(n int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Sam Example <sam@example.net>\r\nTo: practice@example.org\r\nSubject: Scans\r\n" +
		"Date: Mon, 3 Mar 2025 17:00:00 +0000\r\nMessage-ID: <huge.0001@example.net>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"huge\"\r\n\r\n--huge\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
		"All the scans are attached.\r\n--huge\r\nContent-Type: application/zip\r\n" +
		"Content-Disposition: attachment; filename=\"scans.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a, 0xa5, 0x00}, n/3))
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--huge--\r\n")
	return b.Bytes()
}

func TestParseOverSizeLimit(t *testing.T) {
	raw := hugeMessage(11 << 20) // 11 MB decoded, about 15 MB encoded
	in := Parse(raw, 0, parseOurs)
	checkInbound(t, in)
	if in.ProviderID != "huge.0001@example.net" || in.From != "sam@example.net" || in.Subject != "Scans" {
		t.Errorf("header not read: %q %q %q", in.ProviderID, in.From, in.Subject)
	}
	if in.Text != "" || len(in.Attachments) != 0 {
		t.Errorf("body read despite the size limit: %q %+v", in.Text, in.Attachments)
	}
	want := []string{fmt.Sprintf("over the size limit (%d MB); open the mailbox to read it", (len(raw)+(1<<20)-1)>>20)}
	if !reflect.DeepEqual(in.Notes, want) {
		t.Errorf("Notes = %q, want %q", in.Notes, want)
	}

	// With a higher limit the same message is read in full, and the
	// attachment's decoded size is counted.
	in = Parse(raw, 0, ParseOptions{MaxSize: 32 << 20})
	checkInbound(t, in)
	if in.Text != "All the scans are attached." || len(in.Notes) != 0 {
		t.Errorf("Text = %q, Notes = %q", in.Text, in.Notes)
	}
	wantAtt := []envelope.Attachment{{Name: "scans.zip", Type: "application/zip", Size: (11 << 20) / 3 * 3}}
	if !reflect.DeepEqual(in.Attachments, wantAtt) {
		t.Errorf("Attachments = %+v, want %+v", in.Attachments, wantAtt)
	}
}

// The watcher fetches only the header of a message over the limit and
// passes its full size.
func TestParseHeaderOnly(t *testing.T) {
	raw := readFixture(t, "plain_utf8.eml")
	hdr, _ := splitHeader(raw)
	in := Parse(hdr, 23<<20, ParseOptions{})
	checkInbound(t, in)
	full := Parse(raw, 0, ParseOptions{})
	if in.ProviderID != full.ProviderID || in.From != full.From || in.Subject != full.Subject || !in.ReceivedAt.Equal(full.ReceivedAt) {
		t.Errorf("header-only parse differs: %+v", in)
	}
	want := []string{"over the size limit (23 MB); open the mailbox to read it"}
	if in.Text != "" || !reflect.DeepEqual(in.Notes, want) {
		t.Errorf("Text = %q, Notes = %q; want no text, %q", in.Text, in.Notes, want)
	}
}

func TestParseContentIDStable(t *testing.T) {
	raw := readFixture(t, "no_message_id.eml")
	a := Parse(raw, 0, parseOurs)
	// An IMAP fetch returns CRLF line ends; the id must not change.
	crlf := bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n"))
	b := Parse(crlf, 0, parseOurs)
	if a.ProviderID != b.ProviderID || !strings.HasPrefix(string(a.ProviderID), "sha256:") {
		t.Fatalf("ProviderID %q (LF) vs %q (CRLF)", a.ProviderID, b.ProviderID)
	}
	other := Parse(bytes.Replace(raw, []byte("no Message-ID"), []byte("no Message-Id"), 1), 0, parseOurs)
	if other.ProviderID == a.ProviderID {
		t.Fatalf("different bodies share ProviderID %q", a.ProviderID)
	}
	later := Parse(bytes.Replace(raw, []byte("13:30:00"), []byte("13:31:00"), 1), 0, parseOurs)
	if later.ProviderID == a.ProviderID {
		t.Fatalf("different dates share ProviderID %q", a.ProviderID)
	}
}

func TestParseHeaders(t *testing.T) {
	raw := "From: \"Sam, Example\" <Sam@Example.net>\r\n" +
		"To: Partner <partner@example.net>, practice@example.org\r\n" +
		"Subject: =?utf-8?q?Termin_am_Dienstag?= =?iso-8859-1?q?_=FCber_Zoom?=\r\n" +
		"Date: not a date\r\n" +
		"Message-ID: <abc@example.net> (comment)\r\n" +
		"References: <r1@example.net>\r\n <r2@example.net>\r\n" +
		"In-Reply-To: <r3@example.net> (Sam's message of Monday)\r\n" +
		"\r\nHello\r\n"
	in := Parse([]byte(raw), 0, parseOurs)
	checkInbound(t, in)
	if in.From != "Sam@Example.net" || in.FromName != "Sam, Example" || in.To != "practice@example.org" {
		t.Errorf("From/To = %q %q %q", in.From, in.FromName, in.To)
	}
	if in.Subject != "Termin am Dienstag über Zoom" {
		t.Errorf("Subject = %q", in.Subject)
	}
	if !in.ReceivedAt.IsZero() || !reflect.DeepEqual(in.Notes, []string{"unreadable Date header"}) {
		t.Errorf("ReceivedAt = %v, Notes = %q", in.ReceivedAt, in.Notes)
	}
	if in.MessageID != "<abc@example.net>" || in.ProviderID != "abc@example.net" {
		t.Errorf("MessageID = %q, ProviderID = %q", in.MessageID, in.ProviderID)
	}
	wantRefs := []string{"<r1@example.net>", "<r2@example.net>", "<r3@example.net>"}
	if !reflect.DeepEqual(in.References, wantRefs) {
		t.Errorf("References = %q, want %q", in.References, wantRefs)
	}

	// In-Reply-To already last in References is not repeated.
	in = Parse([]byte("From: a@example.net\r\nReferences: <r1@x> <r2@x>\r\nIn-Reply-To: <r2@x>\r\n\r\nhi\r\n"), 0, parseOurs)
	if want := []string{"<r1@x>", "<r2@x>"}; !reflect.DeepEqual(in.References, want) {
		t.Errorf("References = %q, want %q", in.References, want)
	}
	if in.To != "" {
		t.Errorf("To = %q, want empty", in.To)
	}
}

// Broken input of every kind comes back as a message with an id.
func TestParseBroken(t *testing.T) {
	var deep string
	for i := range 60 {
		deep += fmt.Sprintf("Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	deep += "Content-Type: text/plain\r\n\r\ndeep text\r\n"
	manyParts := "Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\nContent-Type: image/png\r\n\r\nx\r\n", 1200) + "--b--\r\n"
	tests := []struct {
		name     string
		raw      string
		contains string
		note     string
	}{
		{"empty", "", "", ""},
		{"blank lines", "\r\n\r\n\r\n", "", ""},
		{"no header", "just some words\nand more", "just some words\nand more", "broken MIME: no header"},
		{"header only", "From: sam@example.net\r\nSubject: hi", "", ""},
		{"nul bytes", "From: sam@example.net\r\n\r\nhel\x00lo", "hello", ""},
		{"missing boundary", "From: sam@example.net\r\nContent-Type: multipart/mixed\r\n\r\nplain words", "plain words", "broken MIME: multipart without parts"},
		{"bad content type", "From: sam@example.net\r\nContent-Type: garbage\r\n\r\nstill text", "still text", "broken MIME: unreadable Content-Type"},
		{"unquoted parameter with spaces", "From: sam@example.net\r\nContent-Type: multipart/mixed; boundary=a b\r\n\r\n--a b\r\nContent-Type: text/plain\r\n\r\ninside\r\n--a b--\r\n", "inside", ""},
		{"deep nesting", deep, "", "broken MIME: nested too deeply"},
		{"many parts", manyParts, "", "broken MIME: too many parts"},
		{"latin-1 without charset", "From: sam@example.net\r\n\r\nGr\xfc\xdfe", "Grüße", ""},
		{"body without blank line", "From: sam@example.net\r\nSubject: hi\r\nI need to talk to someone today\r\nplease", "I need to talk to someone today\nplease", "broken MIME: no blank line after the header"},
		{"first header line folded", " folded\r\nFrom: sam@example.net\r\n\r\nbody", "body", "broken MIME: malformed header line"},
		{"huge header", "From: sam@example.net\r\nX-Junk: " + strings.Repeat("a", 2<<20) + "\r\n\r\nbody", "", "broken MIME: header too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Parse([]byte(tt.raw), 0, parseOurs)
			checkInbound(t, in)
			if !strings.Contains(in.Text, tt.contains) {
				t.Errorf("Text = %q, want it to contain %q", in.Text, tt.contains)
			}
			if tt.note != "" && !contains(in.Notes, tt.note) {
				t.Errorf("Notes = %q, want %q", in.Notes, tt.note)
			}
			if tt.note == "" {
				for _, n := range in.Notes {
					if strings.HasPrefix(n, "broken MIME") {
						t.Errorf("unexpected note %q", n)
					}
				}
			}
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// The ProviderID our sender returns is what a bounce of that mail reports,
// and our own mail coming back is never acknowledged.
func TestParseOwnMailAndItsBounce(t *testing.T) {
	srv, err := mailtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	s, err := NewSender(SMTPConfig{Addr: srv.Addr, Security: SecurityNone, From: "practice@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := s.Send(ctx, envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindAck,
		To: "sam@example.net", Subject: "Re: Tuesday", Text: "Thank you for your message."})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.Wait(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	sent := msgs[0].Data

	own := Parse(sent, 0, parseOurs)
	checkInbound(t, own)
	if own.ProviderID != id || !own.Automated {
		t.Errorf("our own mail: ProviderID %q (sent %q), Automated %v", own.ProviderID, id, own.Automated)
	}

	hdr, _ := splitHeader(sent)
	dsn := "From: MAILER-DAEMON@mail.example.org (Mail Delivery System)\r\nTo: practice@example.org\r\n" +
		"Subject: Undelivered Mail Returned to Sender\r\nMessage-Id: <bounce.1@mail.example.org>\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n" +
		"--r\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n" +
		"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mail.example.org\r\n\r\n" +
		"Final-Recipient: rfc822; sam@example.net\r\nAction: failed\r\nStatus: 5.2.2 (mailbox full)\r\n\r\n" +
		"--r\r\nContent-Type: text/rfc822-headers\r\n\r\n" + string(hdr) + "\r\n--r--\r\n"
	in := Parse([]byte(dsn), 0, parseOurs)
	checkInbound(t, in)
	if in.BounceOf != string(id) || in.BounceStatus != "5.2.2" || !in.Automated {
		t.Errorf("bounce: BounceOf %q (sent %q), status %q, Automated %v", in.BounceOf, id, in.BounceStatus, in.Automated)
	}
}

func TestParseFailedDSNWithoutReturnedMessage(t *testing.T) {
	raw := "From: MAILER-DAEMON@mail.example.org\r\nReturn-Path: <>\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n" +
		"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n" +
		"Final-Recipient: rfc822; a@example.net\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n" +
		"Final-Recipient: rfc822; b@example.net\r\nAction: failed\r\nStatus: 5.7.1\r\n\r\n--r--\r\n"
	in := Parse([]byte(raw), 0, parseOurs)
	checkInbound(t, in)
	if !in.Automated || in.BounceOf != "" || in.BounceStatus != "5.7.1" {
		t.Errorf("Automated %v, BounceOf %q, status %q", in.Automated, in.BounceOf, in.BounceStatus)
	}
	if !contains(in.Notes, "delivery failure report (5.7.1); the failed message is not identified") {
		t.Errorf("Notes = %q", in.Notes)
	}
}

func BenchmarkParse(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	var corpus [][]byte
	var total int64
	for _, f := range files {
		raw := readFixture(b, filepath.Base(f))
		corpus = append(corpus, raw)
		total += int64(len(raw))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, raw := range corpus {
			Parse(raw, 0, parseOurs)
		}
	}
}

func TestFindStatus(t *testing.T) {
	tests := []struct{ text, want string }{
		{"550 5.1.1 No such user here", "5.1.1"},
		{"Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"},
		{"connect to 5.6.7.8 failed; later: 4.4.7 expired", "4.4.7"},
		{"host 192.0.2.5 said 554 5.7.1 rejected", "5.7.1"},
		{"2.0.0 Ok: queued", ""},
		{"Exim 4.97 here", ""},
	}
	for _, tt := range tests {
		if got := findStatus(tt.text); got != tt.want {
			t.Errorf("findStatus(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

func TestHTMLToText(t *testing.T) {
	in := `<html><head><style>p{}</style></head><body><div>Hello <b>there</b>,</div><div>second line</div>` +
		`<p>para &amp; more&nbsp;x</p><a href="https://example.org/a">link text</a><br>after<ul><li>one</li></ul>` +
		`<script>alert(1)</script></body></html>`
	want := "Hello there,\nsecond line\n\npara & more x\n\nlink text <https://example.org/a>\nafter\n - one"
	if got := htmlToText(in); got != want {
		t.Errorf("htmlToText() = %q, want %q", got, want)
	}
}

func TestParseAttachmentNames(t *testing.T) {
	part := func(ct, cd string) string {
		s := "--b\r\nContent-Type: " + ct + "\r\n"
		if cd != "" {
			s += "Content-Disposition: " + cd + "\r\n"
		}
		return s + "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
	}
	raw := "From: sam@example.net\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		part("application/pdf", "attachment; filename*=iso-8859-1''Befund%20M%E4rz.pdf") +
		part("application/pdf", `attachment; filename="=?utf-8?q?Bericht_=C3=BCber.pdf?="`) +
		part("application/octet-stream", `attachment; filename="../../etc/passwd"`) +
		part("application/pdf", "attachment; filename=my file.pdf") +
		part(`image/jpeg; name="photo.jpg"`, "") +
		part("image/gif", "inline") +
		"--b--\r\n"
	in := Parse([]byte(raw), 0, parseOurs)
	checkInbound(t, in)
	want := []envelope.Attachment{
		{Name: "Befund März.pdf", Type: "application/pdf", Size: 3},
		{Name: "Bericht über.pdf", Type: "application/pdf", Size: 3},
		{Name: "passwd", Type: "application/octet-stream", Size: 3},
		{Name: "my file.pdf", Type: "application/pdf", Size: 3},
		{Name: "photo.jpg", Type: "image/jpeg", Size: 3},
		{Type: "image/gif", Size: 3},
	}
	if !reflect.DeepEqual(in.Attachments, want) {
		t.Errorf("Attachments =\n%+v\nwant\n%+v", in.Attachments, want)
	}
	if in.Text != "see attached" {
		t.Errorf("Text = %q", in.Text)
	}
}

// A panic inside parsing becomes a note; the message keeps what was read
// before it.
func TestParseRecoversPanic(t *testing.T) {
	raw := readFixture(t, "iso88591_qp.eml")
	in := parseSafely(raw, 0, parseOurs, func(p *parser, raw []byte, size int64, in *envelope.Inbound) {
		in.From, in.Subject = "juergen@example.de", "Gr\xfc\xdfe"
		p.brokenf("bad base64")
		panic("decoder bug")
	})
	checkInbound(t, in)
	if in.From != "juergen@example.de" || !strings.HasPrefix(string(in.ProviderID), "sha256:") {
		t.Errorf("From %q, ProviderID %q", in.From, in.ProviderID)
	}
	want := []string{"broken MIME: bad base64", "broken MIME: internal error while reading; open the mailbox to read it"}
	if !reflect.DeepEqual(in.Notes, want) {
		t.Errorf("Notes = %q, want %q", in.Notes, want)
	}

	// With a Message-ID read before the panic, that stays the id.
	in = parseSafely(raw, 0, parseOurs, func(p *parser, raw []byte, size int64, in *envelope.Inbound) {
		in.ProviderID = "latin1.0001@example.de"
		panic("decoder bug")
	})
	if in.ProviderID != "latin1.0001@example.de" || in.Channel != envelope.Email {
		t.Errorf("ProviderID %q, Channel %q", in.ProviderID, in.Channel)
	}
}

func TestParseRelayTokenAndAuthResults(t *testing.T) {
	head := "From: Dr. Rivera <therapist@example.org>\r\nSubject: Re: Check-in\r\nMessage-ID: <t1@example.org>\r\n"
	tests := []struct {
		name, headers   string
		token, authFail string
	}{
		{"plus address in To", "To: Practice <practice+r-abc234xyz@example.org>\r\n", "abc234xyz", ""},
		{"in Cc, any case", "To: someone@example.net\r\nCc: PRACTICE+R-Abc234@Example.org\r\n", "abc234", ""},
		{"delivered-to only", "To: undisclosed-recipients:;\r\nDelivered-To: practice+r-q7@example.org\r\n", "q7", ""},
		{"not our address", "To: other+r-abc@example.net\r\n", "", ""},
		{"plain practice address", "To: practice@example.org\r\n", "", ""},
		{"dmarc fail", "To: practice+r-abc@example.org\r\nAuthentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.org; dkim=none; dmarc=fail (p=reject) header.from=example.org\r\n",
			"abc", "dmarc=fail"},
		{"dkim fail in second header", "To: practice+r-abc@example.org\r\nAuthentication-Results: mx.example.org; dmarc=pass\r\nAuthentication-Results: mx.example.org; dkim=fail reason=\"bad signature\"\r\n",
			"abc", "dkim=fail"},
		{"softfail is not fail", "To: practice+r-abc@example.org\r\nAuthentication-Results: mx.example.org; spf=softfail smtp.mailfrom=example.org\r\n", "abc", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Parse([]byte(head+tt.headers+"\r\nPlease tell her Thursday works.\r\n"), 0, ParseOptions{Ours: []string{"practice@example.org"}})
			if in.RelayToken != tt.token || in.AuthFailed != tt.authFail {
				t.Errorf("token %q auth %q, want %q %q", in.RelayToken, in.AuthFailed, tt.token, tt.authFail)
			}
		})
	}
}
