package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/therapistinbox/gateway/channels/email/imaptest"
	"github.com/therapistinbox/gateway/channels/email/submissiontest"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// mailPeers are the real servers the email stories run against: Dovecot
// IMAP holding the practice mailbox, and Dovecot submission relaying to
// Postfix's smtp-sink, which keeps every message the gateway sends.
type mailPeers struct {
	IMAP   *imaptest.Server
	SMTP   *submissiontest.Server
	Twilio *twiliotest.Server
	DB     string
	clock  func() time.Time // the gateway's clock, when not the real one
}

func startMailPeers(t *testing.T) *mailPeers {
	t.Helper()
	p := &mailPeers{
		IMAP:   imaptest.Start(t),
		SMTP:   submissiontest.Start(t),
		Twilio: twiliotest.Start(testAccountSID),
		DB:     filepath.Join(t.TempDir(), "gateway.db"),
	}
	t.Cleanup(p.Twilio.Close)
	return p
}

// start runs a gateway on the peers: IMAP over STARTTLS, SMTP submission
// over STARTTLS with AUTH, both with passwords. The test may Close it
// early to simulate downtime.
func (p *mailPeers) start(t *testing.T) *Main {
	t.Helper()
	cfg, err := ParseConfig(fillConfig(p.DB, "127.0.0.1:0", p.SMTP.Addr(), p.Twilio.URL, ""), testEnv)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	cfg.Email.Enabled = true
	cfg.Email.SMTP = MailServer{Addr: p.SMTP.Addr(), Security: "starttls", Username: p.SMTP.User(), Password: p.SMTP.Pass()}
	cfg.Email.IMAP = MailServer{Addr: p.IMAP.Addr(), Security: "starttls", Username: p.IMAP.User(), Password: p.IMAP.Pass()}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	logs := &syncBuffer{}
	m := &Main{Config: cfg, Logger: newTestLogger(logs), SMTPRoots: p.SMTP.RootCAs(), IMAPRoots: p.IMAP.RootCAs()}
	if err := m.Open(t.Context()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if p.clock != nil {
		m.Store.Now = p.clock
	}
	m.Start(t.Context())
	t.Cleanup(func() {
		m.Close() // again, when the test stopped it early: harmless
		(&testMain{Log: logs}).assertLogClean(t, "email story", []string{"p.vantongeren", emailerDisplay, "Rescheduling"})
	})
	return m
}

// clientMail is a client's email as their mail program would send it.
// Each id writes from its own address (p.vantongeren+ID@example.org), so
// every message is a first contact and gets a full acknowledgement.
func clientMail(id, subject, body string, refs ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\n",
		emailerDisplay, clientAddr(id), practiceFrom, subject, time.Now().Format(time.RFC1123Z), id)
	if len(refs) > 0 {
		fmt.Fprintf(&b, "In-Reply-To: %s\r\nReferences: %s\r\n", refs[len(refs)-1], strings.Join(refs, " "))
	}
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n") + "\r\n")
	return []byte(b.String())
}

func clientAddr(id string) string {
	return "p.vantongeren+" + strings.Split(id, "@")[0] + "@example.org"
}

// acksByParent counts the captured replies to the client per In-Reply-To.
func acksByParent(t *testing.T, msgs []submissiontest.Captured) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, c := range msgs {
		if len(c.To) == 1 && strings.HasPrefix(c.To[0], "p.vantongeren+") {
			h := header(t, c.Data)
			n[h.Get("In-Reply-To")]++
		}
	}
	return n
}

func header(t *testing.T, raw []byte) mail.Header {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("captured mail unreadable: %v", err)
	}
	return r.Header
}

// waitAcks waits until the client has replies to want distinct messages,
// then a moment more, and fails on any parent acknowledged twice.
func waitAcks(t *testing.T, p *mailPeers, want int) map[string]int {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		got := acksByParent(t, p.SMTP.Messages(t))
		if len(got) >= want {
			time.Sleep(300 * time.Millisecond) // a duplicate would come now
			got = acksByParent(t, p.SMTP.Messages(t))
			for parent, n := range got {
				if n != 1 {
					t.Errorf("%s acknowledged %d times", parent, n)
				}
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("acks for %d messages, want %d: %v", len(got), want, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEmailAckThreadsAndMarksSeen(t *testing.T) {
	p := startMailPeers(t)
	p.start(t)
	p.IMAP.Deliver(t, "INBOX", clientMail("c1@client.example", "Rescheduling",
		"Could we move Thursday?\n\nOn Mon, 16 Nov 2026 at 09:00, Practice <practice@example.org> wrote:\n> earlier", "<r0@client.example>"))

	start := time.Now()
	msgs := p.SMTP.Wait(t, 1, waitLong)
	t.Logf("mailbox to ack accepted by the SMTP server: %v", time.Since(start))
	h := header(t, msgs[0].Data)
	subject, _ := h.Subject()
	checks := map[string][2]string{
		"To":             {msgs[0].To[0], clientAddr("c1@client.example")},
		"Subject":        {subject, "Re: Rescheduling"},
		"In-Reply-To":    {h.Get("In-Reply-To"), "<c1@client.example>"},
		"References":     {h.Get("References"), "<r0@client.example> <c1@client.example>"},
		"Auto-Submitted": {h.Get("Auto-Submitted"), "auto-replied"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", name, c[0], c[1])
		}
	}
	if from, _ := h.AddressList("From"); len(from) != 1 || from[0].Address != practiceFrom {
		t.Errorf("From = %v, want the practice address", from)
	}
	// \Seen is set only after the dispatcher committed, so by now.
	deadline := time.Now().Add(waitLong)
	for {
		st := p.IMAP.Fetch(t, "INBOX")
		if len(st) == 1 && st[0].Has(`\Seen`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailbox state %+v, want the message \\Seen", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEmailSurvivesDroppedConnectionAndDowntime(t *testing.T) {
	p := startMailPeers(t)
	m := p.start(t)
	p.IMAP.Deliver(t, "INBOX", clientMail("d1@client.example", "One", "first"))
	waitAcks(t, p, 1)

	// The server drops the connection; mail keeps arriving.
	if !p.IMAP.Kick(t) {
		t.Fatal("no IMAP connection to drop")
	}
	p.IMAP.Deliver(t, "INBOX", clientMail("d2@client.example", "Two", "second"))
	waitAcks(t, p, 2)

	// The gateway is down while two more arrive; it files them once at start.
	m.Close()
	p.IMAP.Deliver(t, "INBOX", clientMail("d3@client.example", "Three", "third"))
	p.IMAP.Deliver(t, "INBOX", clientMail("d4@client.example", "Four", "fourth"))
	p.start(t)
	got := waitAcks(t, p, 4)
	for _, id := range []string{"d1", "d2", "d3", "d4"} {
		if got["<"+id+"@client.example>"] != 1 {
			t.Errorf("%s: %d acks, want 1 (all: %v)", id, got["<"+id+"@client.example>"], got)
		}
	}
}

func TestEmailUIDValidityChangeMakesNoDuplicates(t *testing.T) {
	p := startMailPeers(t)
	m := p.start(t)
	p.IMAP.Deliver(t, "INBOX", clientMail("u1@client.example", "One", "first"))
	p.IMAP.Deliver(t, "INBOX", clientMail("u2@client.example", "Two", "second"))
	waitAcks(t, p, 2)

	// The mailbox is rebuilt on the server: same mail, new UIDs.
	m.Close()
	p.IMAP.ResetUIDValidity(t, "INBOX")
	p.IMAP.Deliver(t, "INBOX", clientMail("u3@client.example", "Three", "third"))
	m = p.start(t)
	waitAcks(t, p, 3)
	res, err := m.Store.Lookup(t.Context(), envelope.Email, "u1@client.example")
	if err != nil || res.Duplicate {
		t.Fatalf("u1: %+v, %v", res, err)
	}
}

func TestEmailAutoReplyIsFiledNotAnswered(t *testing.T) {
	p := startMailPeers(t)
	m := p.start(t)
	auto := strings.Replace(string(clientMail("a1@client.example", "Out of office", "I am away until Monday.")),
		"MIME-Version", "Auto-Submitted: auto-replied\r\nMIME-Version", 1)
	p.IMAP.Deliver(t, "INBOX", []byte(auto))
	p.IMAP.Deliver(t, "INBOX", clientMail("a2@client.example", "Real", "a person writing"))
	got := waitAcks(t, p, 1)
	if got["<a1@client.example>"] != 0 {
		t.Errorf("auto-reply acknowledged: %v", got)
	}
	res, err := m.Store.Lookup(t.Context(), envelope.Email, "a1@client.example")
	if err != nil || res.Action != "automated" {
		t.Errorf("auto-reply filed as %+v, %v; want action automated", res, err)
	}
}
