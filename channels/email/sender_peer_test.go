package email

// Tests of the sender against a real submission server: Dovecot submission
// relaying to Postfix's smtp-sink (see submissiontest).

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/therapistinbox/gateway/channels/email/submissiontest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// peerWait bounds waiting for a captured message or a Dovecot log line
// (its log process can lag under load).
const peerWait = 10 * time.Second

// peerSender returns a sender logged in to srv at addr.
func peerSender(t *testing.T, srv *submissiontest.Server, security, addr string) *Sender {
	t.Helper()
	return mustSender(t, SMTPConfig{
		Addr: addr, Security: security,
		Username: srv.User(), Password: srv.Pass(),
		FromName:  "Dr. Rivera's practice",
		TLSConfig: &tls.Config{RootCAs: srv.RootCAs()},
		Timeout:   10 * time.Second,
	})
}

var peerNotice = envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindNotice, To: client, Subject: "Notice", Text: "hello\n"}

// sendOne sends m, waits for the sink to have it and checks the envelope
// and the Message-ID.
func sendOne(t *testing.T, srv *submissiontest.Server, s *Sender, m envelope.Outbound) submissiontest.Captured {
	t.Helper()
	id, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := srv.Wait(t, 1, peerWait)
	if len(msgs) != 1 {
		t.Fatalf("captured %d messages, want 1", len(msgs))
	}
	c := msgs[0]
	if c.From != practice || len(c.To) != 1 || c.To[0] != m.To {
		t.Errorf("envelope %q → %q, want %q → [%q]", c.From, c.To, practice, m.To)
	}
	h, _ := mustRead(t, c.Data)
	if mid, err := h.MessageID(); err != nil || mid != string(id) {
		t.Errorf("Message-ID = %q (%v), Send returned %q", mid, err, id)
	}
	return c
}

// received returns the first Received header: Dovecot's, when relayed.
func received(t *testing.T, c submissiontest.Captured) string {
	t.Helper()
	h, _ := mustRead(t, c.Data)
	return h.Get("Received")
}

func TestPeerStartTLSPlain(t *testing.T) {
	srv := submissiontest.Start(t)
	c := sendOne(t, srv, peerSender(t, srv, SecurityStartTLS, srv.Addr()), peerNotice)
	// RFC 3848: ESMTPSA = ESMTP over TLS, authenticated.
	if r := received(t, c); !strings.Contains(r, "with ESMTPSA") {
		t.Errorf("Received = %q, want ESMTPSA", r)
	}
	// PLAIN is preferred when the server offers PLAIN and LOGIN.
	if log := srv.WaitLog(t, "Login: ", peerWait); !strings.Contains(log, "method=PLAIN") {
		t.Errorf("Dovecot log does not show a PLAIN login:\n%s", log)
	}
}

func TestPeerImplicitTLS(t *testing.T) {
	srv := submissiontest.Start(t)
	c := sendOne(t, srv, peerSender(t, srv, SecurityTLS, srv.TLSAddr()), peerNotice)
	if r := received(t, c); !strings.Contains(r, "with ESMTPSA") {
		t.Errorf("Received = %q, want ESMTPSA", r)
	}

	// Without the test CA the certificate is refused: transient, nothing sent.
	s := mustSender(t, SMTPConfig{Addr: srv.TLSAddr(), Security: SecurityTLS, Username: srv.User(), Password: srv.Pass()})
	_, err := s.Send(context.Background(), peerNotice)
	if err == nil || envelope.IsPermanent(err) {
		t.Errorf("untrusted certificate: err = %v, want a transient error", err)
	}
	if n := len(srv.Messages(t)); n != 1 {
		t.Errorf("captured %d messages, want 1", n)
	}
}

func TestPeerAuthLogin(t *testing.T) {
	srv := submissiontest.Start(t, submissiontest.WithAuthMechanisms("login"))
	sendOne(t, srv, peerSender(t, srv, SecurityStartTLS, srv.Addr()), peerNotice)
	if log := srv.WaitLog(t, "Login: ", peerWait); !strings.Contains(log, "method=LOGIN") {
		t.Errorf("Dovecot log does not show a LOGIN login:\n%s", log)
	}

	s := mustSender(t, SMTPConfig{
		Addr: srv.Addr(), Security: SecurityStartTLS, Username: srv.User(), Password: "wrong",
		TLSConfig: &tls.Config{RootCAs: srv.RootCAs()},
	})
	_, err := s.Send(context.Background(), peerNotice)
	var pe *envelope.PermanentError
	if !errors.As(err, &pe) || pe.Code != "535 5.7.8" || pe.Reason != "smtp auth failed" {
		t.Errorf("wrong password over LOGIN: err = %v, want permanent smtp auth failed (535 5.7.8)", err)
	}
}

func TestPeerNoUsableMechanism(t *testing.T) {
	srv := submissiontest.Start(t, submissiontest.WithAuthMechanisms("cram-md5"))
	_, err := peerSender(t, srv, SecurityStartTLS, srv.Addr()).Send(context.Background(), peerNotice)
	if err == nil || !strings.Contains(err.Error(), "neither AUTH PLAIN nor AUTH LOGIN") {
		t.Errorf("err = %v, want neither PLAIN nor LOGIN", err)
	}
	if n := len(srv.Messages(t)); n != 0 {
		t.Errorf("captured %d messages, want 0", n)
	}
}

func TestPeerWrongPassword(t *testing.T) {
	srv := submissiontest.Start(t)
	s := mustSender(t, SMTPConfig{
		Addr: srv.TLSAddr(), Security: SecurityTLS, Username: srv.User(), Password: "not-the-password",
		TLSConfig: &tls.Config{RootCAs: srv.RootCAs()},
	})
	_, err := s.Send(context.Background(), peerNotice)
	var pe *envelope.PermanentError
	if !errors.As(err, &pe) || pe.Code != "535 5.7.8" || pe.Reason != "smtp auth failed" {
		t.Fatalf("err = %v, want permanent smtp auth failed (535 5.7.8)", err)
	}
	for _, leak := range []string{"not-the-password", srv.User(), client} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error %q contains %q", err, leak)
		}
	}
	if n := len(srv.Messages(t)); n != 0 {
		t.Errorf("captured %d messages, want 0", n)
	}
}

func TestPeerRejected(t *testing.T) {
	tests := []struct {
		reply, command string
		permanent      bool
		code           int
		enhanced       string // PermanentError.Code for 5xx
	}{
		{"451 4.3.0 try again later", "RCPT", false, 451, ""},
		{"452 4.2.2 mailbox full", ".", false, 452, ""},
		{"550 5.1.1 no such user", "RCPT", true, 550, "550 5.1.1"},
		{"554 5.6.0 message refused", ".", true, 554, "554 5.6.0"},
		{"553 5.7.1 sender not allowed", "MAIL", true, 553, "553 5.7.1"},
	}
	for _, tt := range tests {
		t.Run(tt.reply[:3]+"_"+tt.command, func(t *testing.T) {
			srv := submissiontest.Start(t, submissiontest.WithReject(tt.reply, tt.command))
			s := peerSender(t, srv, SecurityStartTLS, srv.Addr())
			out := envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindAck, To: client, ToName: "Casey Client", Subject: "Re: hi", Text: "ok\n"}
			_, err := s.Send(context.Background(), out)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if got := envelope.IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v (%v)", got, tt.permanent, err)
			}
			var pe *envelope.PermanentError
			var se *smtp.SMTPError
			if tt.permanent {
				if !errors.As(err, &pe) || pe.Code != tt.enhanced || pe.Reason != "smtp refused" {
					t.Errorf("err = %v, want permanent %q smtp refused", err, tt.enhanced)
				}
			} else if !errors.As(err, &se) || se.Code != tt.code {
				t.Errorf("err = %v, want a wrapped SMTPError %d", err, tt.code)
			}
			// Dovecot quotes the recipient in RCPT replies; none of it
			// may reach the error.
			for _, leak := range []string{client, "Casey", strings.SplitN(tt.reply, " ", 3)[2]} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q contains %q", err, leak)
				}
			}
		})
	}
}

func TestPeerAckHeaders(t *testing.T) {
	srv := submissiontest.Start(t)
	s := mustSender(t, SMTPConfig{
		Addr: srv.Addr(), Security: SecurityStartTLS,
		Username: srv.User(), Password: srv.Pass(),
		FromName:  "Praxis Dr. Müller, Zürich",
		TLSConfig: &tls.Config{RootCAs: srv.RootCAs()},
	})
	const (
		toName  = "Zoë Ångström-Nuñez, \"Zo\""
		subject = "Re: Grüße aus Köln – können wir den Termin nächste Woche auf Donnerstag verschieben? Danke 😊"
		text    = "Danke, Ihre Nachricht ist angekommen.\nDr. Müller liest E-Mails dienstags.\n"
	)
	before := time.Now().Add(-time.Second)
	c := sendOne(t, srv, s, envelope.Outbound{
		ID: 9, Channel: envelope.Email, Kind: envelope.KindAck,
		To: client, ToName: toName, Subject: subject, Text: text,
		InReplyTo:  "<orig-2@client.example>",
		References: []string{"<orig-1@client.example>", "<orig-2@client.example>"},
	})
	after := time.Now().Add(time.Second)

	// What went over the wire: 7-bit, encoded words, short header lines.
	header, _, _ := bytes.Cut(c.Data, []byte("\r\n\r\n"))
	for _, b := range c.Data {
		if b >= 0x80 {
			t.Fatalf("message has 8-bit bytes:\n%s", c.Data)
		}
	}
	checkLineLengths(t, header)
	if !bytes.Contains(header, []byte("=?utf-8?")) {
		t.Errorf("no RFC 2047 encoded word in:\n%s", header)
	}

	h, parts := mustRead(t, c.Data)
	if a := mustAddress(t, h, "From"); a.Address != practice || a.Name != "Praxis Dr. Müller, Zürich" {
		t.Errorf("From = %q <%s>", a.Name, a.Address)
	}
	if a := mustAddress(t, h, "To"); a.Address != client || a.Name != toName {
		t.Errorf("To = %q <%s>", a.Name, a.Address)
	}
	if got, err := h.Subject(); err != nil || got != subject {
		t.Errorf("Subject = %q (%v), want %q", got, err, subject)
	}
	if got := h.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q, want auto-replied", got)
	}
	if got, _ := h.MsgIDList("In-Reply-To"); len(got) != 1 || got[0] != "orig-2@client.example" {
		t.Errorf("In-Reply-To = %q", got)
	}
	if got, _ := h.MsgIDList("References"); strings.Join(got, " ") != "orig-1@client.example orig-2@client.example" {
		t.Errorf("References = %q", got)
	}
	if mid, _ := h.MessageID(); !strings.HasSuffix(mid, "@example.org") || len(mid) < len("x@example.org")+8 {
		t.Errorf("Message-ID = %q, want a unique id @example.org", mid)
	}
	if got, err := h.Date(); err != nil || got.Before(before) || got.After(after) {
		t.Errorf("Date = %v (%v), want between %v and %v", got, err, before, after)
	}
	want := part{"text/plain", "utf-8", strings.ReplaceAll(text, "\n", "\r\n")}
	if len(parts) != 1 || parts[0] != want {
		t.Errorf("body = %+v, want %+v", parts, want)
	}
}

func TestPeerDigest(t *testing.T) {
	srv := submissiontest.Start(t)
	const (
		text = "3 neue Nachrichten – älteste zuerst\n\nZoë: Termin?\n"
		html = "<p>3 neue Nachrichten – älteste zuerst</p>\n<p><b>Zoë</b>: Termin?</p>\n"
	)
	c := sendOne(t, srv, peerSender(t, srv, SecurityTLS, srv.TLSAddr()), envelope.Outbound{
		Channel: envelope.Email, Kind: envelope.KindDigest,
		To: client, Subject: "Check-in: 3 Nachrichten", Text: text, HTML: html,
	})
	h, parts := mustRead(t, c.Data)
	if typ, _, _ := h.ContentType(); typ != "multipart/alternative" {
		t.Errorf("Content-Type = %q, want multipart/alternative", typ)
	}
	if got := h.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted = %q, want auto-generated", got)
	}
	if h.Has("In-Reply-To") || h.Has("References") {
		t.Errorf("digest has threading headers")
	}
	want := []part{
		{"text/plain", "utf-8", strings.ReplaceAll(text, "\n", "\r\n")},
		{"text/html", "utf-8", strings.ReplaceAll(html, "\n", "\r\n")},
	}
	if len(parts) != len(want) {
		t.Fatalf("got %d parts, want %d: %+v", len(parts), len(want), parts)
	}
	for i := range want {
		if parts[i] != want[i] {
			t.Errorf("part %d = %+v, want %+v", i, parts[i], want[i])
		}
	}
}

// checkLineLengths fails when a header line is longer than the 76
// characters RFC 2047 §2 allows on a line with encoded words.
func checkLineLengths(t *testing.T, header []byte) {
	t.Helper()
	for _, line := range strings.Split(string(header), "\r\n") {
		if len(line) > 76 {
			t.Errorf("header line of %d characters: %q", len(line), line)
		}
	}
}

// Names and subjects that need RFC 2047, each decoded back to what was
// sent.
func TestPeerHeaderEncoding(t *testing.T) {
	srv := submissiontest.Start(t)
	tests := []struct{ fromName, toName, subject string }{
		{"Dr. Rivera's practice", "O'Brien, Pat", "Re: next week"},
		{"Praxis Müller", "Zoë", "Re: Grüße"},
		{"Praxis Dr. Müller, Psychotherapie (Zürich) – Terminvereinbarung und Rückfragen",
			"Nuñez-Ångström, María José \"Pepa\" <Büro>",
			"Re: Grüße aus Köln – können wir den Termin nächste Woche auf Donnerstag verschieben? Vielen Dank und bis bald 😊"},
		{"日本語の診療所", "山田 太郎", "Re: 来週の予約について、変更をお願いできますか？よろしくお願いいたします。"},
		{"Plain", "Literal =?utf-8?q?x?=", "Re: a literal =?utf-8?q?x?= stays literal"},
		{"Plain", "Long ASCII", "Re: " + strings.Repeat("word ", 30) + "end"},
		{"Plain", "Underscores_and=equals?", "Re: under_score = equals? question"},
	}
	for i, tt := range tests {
		s := mustSender(t, SMTPConfig{
			Addr: srv.TLSAddr(), Security: SecurityTLS, Username: srv.User(), Password: srv.Pass(),
			FromName: tt.fromName, TLSConfig: &tls.Config{RootCAs: srv.RootCAs()},
		})
		out := envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindAck, To: client, ToName: tt.toName, Subject: tt.subject, Text: "ok\n"}
		if _, err := s.Send(context.Background(), out); err != nil {
			t.Fatalf("%d: Send: %v", i, err)
		}
		msgs := srv.Wait(t, i+1, peerWait)
		// The newest is not always last (file times are coarse): find it
		// by its subject.
		found := false
		for _, c := range msgs {
			h, _ := mustRead(t, c.Data)
			if got, _ := h.Subject(); got != tt.subject {
				continue
			}
			found = true
			header, _, _ := bytes.Cut(c.Data, []byte("\r\n\r\n"))
			checkLineLengths(t, header)
			if a := mustAddress(t, h, "From"); a.Name != tt.fromName || a.Address != practice {
				t.Errorf("%d: From = %q <%s>, want %q", i, a.Name, a.Address, tt.fromName)
			}
			if a := mustAddress(t, h, "To"); a.Name != tt.toName || a.Address != client {
				t.Errorf("%d: To = %q <%s>, want %q", i, a.Name, a.Address, tt.toName)
			}
		}
		if !found {
			t.Errorf("%d: no message with subject %q", i, tt.subject)
		}
	}
}

func TestPeerPlainToSink(t *testing.T) {
	srv := submissiontest.Start(t)
	s := mustSender(t, SMTPConfig{Addr: srv.SinkAddr(), Security: SecurityNone})
	ack := envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindAck, To: client, Subject: "Re: hi", Text: "ok\n"}
	c := sendOne(t, srv, s, ack)
	if c.Helo != "example.org" {
		t.Errorf("EHLO = %q, want example.org (the From domain)", c.Helo)
	}
	if h, _ := mustRead(t, c.Data); h.Has("Received") {
		t.Errorf("direct delivery has a Received header: %q", h.Get("Received"))
	}
	// RFC 3834 §3.3: no bounce for an auto-reply. smtp-sink offers DSN
	// (Dovecot 2.3's submission does not, so go-smtp leaves NOTIFY out
	// there).
	if len(c.RcptArgs) != 1 || !strings.Contains(c.RcptArgs[0], "NOTIFY=NEVER") {
		t.Errorf("ack RCPT arguments = %q, want NOTIFY=NEVER", c.RcptArgs)
	}

	// A notice may bounce.
	if _, err := s.Send(context.Background(), peerNotice); err != nil {
		t.Fatalf("Send: %v", err)
	}
	for _, c := range srv.Wait(t, 2, peerWait) {
		if h, _ := mustRead(t, c.Data); h.Get("Auto-Submitted") == "auto-generated" && strings.Contains(c.RcptArgs[0], "NOTIFY") {
			t.Errorf("notice RCPT arguments = %q, want no NOTIFY", c.RcptArgs)
		}
	}
}
