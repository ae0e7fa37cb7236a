package submissiontest

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const msg = "From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n.starts with a dot\r\nbody\r\n"

func send(t *testing.T, c *smtp.Client, auth sasl.Client) error {
	t.Helper()
	defer c.Close()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	if err := c.SendMail("a@example.org", []string{"b@example.com", "c@example.com"}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

func TestServer(t *testing.T) {
	start := time.Now()
	s := Start(t)
	t.Logf("Start took %v", time.Since(start))
	tlsCfg := &tls.Config{RootCAs: s.RootCAs()}

	c, err := smtp.DialStartTLS(s.Addr(), tlsCfg)
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH = %v %q, want PLAIN LOGIN", ok, mechs)
	}
	if err := send(t, c, sasl.NewPlainClient("", s.User(), s.Pass())); err != nil {
		t.Fatalf("send over STARTTLS: %v", err)
	}

	c, err = smtp.DialTLS(s.TLSAddr(), tlsCfg)
	if err != nil {
		t.Fatalf("implicit TLS: %v", err)
	}
	if err := send(t, c, sasl.NewLoginClient(s.User(), s.Pass())); err != nil {
		t.Fatalf("send over implicit TLS: %v", err)
	}

	c, err = smtp.Dial(s.SinkAddr())
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Errorf("sink offers AUTH")
	}
	if err := send(t, c, nil); err != nil {
		t.Fatalf("send to sink: %v", err)
	}

	msgs := s.Wait(t, 3, 5*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("got %d messages, want 3", len(msgs))
	}
	relayed := 0
	for i, m := range msgs {
		if m.From != "a@example.org" || strings.Join(m.To, ",") != "b@example.com,c@example.com" {
			t.Errorf("%d: envelope %q → %q", i, m.From, m.To)
		}
		if !strings.HasPrefix(m.MailArgs, "<a@example.org>") || len(m.RcptArgs) != 2 || m.RcptArgs[0] != "<b@example.com>" {
			t.Errorf("%d: MailArgs %q RcptArgs %q", i, m.MailArgs, m.RcptArgs)
		}
		// Order within a few milliseconds is not known: tell the relayed
		// messages from the direct one by the EHLO the sink saw.
		data := string(m.Data)
		switch m.Helo {
		case "localhost": // Dovecot
			relayed++
			if !strings.HasPrefix(data, "Received: ") {
				t.Errorf("%d: relayed message does not start with Dovecot's Received:\n%s", i, data)
			}
		case "client.example":
			if strings.HasPrefix(data, "Received: ") {
				t.Errorf("%d: direct message has a Received header:\n%s", i, data)
			}
		default:
			t.Errorf("%d: Helo = %q", i, m.Helo)
		}
		if !strings.HasSuffix(data, msg) {
			t.Errorf("%d: data does not end with the message sent:\n%q", i, data)
		}
		if strings.Contains(data, "smtp-sink") || strings.Contains(data, "X-Mail-Args") {
			t.Errorf("%d: sink headers left in data:\n%s", i, data)
		}
	}

	if relayed != 2 {
		t.Errorf("%d messages relayed by Dovecot, want 2", relayed)
	}
	s.WaitLog(t, "method=PLAIN", 5*time.Second)
	s.WaitLog(t, "method=LOGIN", 5*time.Second)

	// Wrong password: 535 from Dovecot.
	c, err = smtp.DialTLS(s.TLSAddr(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	err = send(t, c, sasl.NewPlainClient("", s.User(), "wrong"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Errorf("wrong password: %v, want 535", err)
	}
	if n := len(s.Messages(t)); n != 3 {
		t.Errorf("%d messages after a refused login, want 3", n)
	}
}

func TestWithOptions(t *testing.T) {
	s := Start(t,
		WithUser("someone", "pa55word"),
		WithAuthMechanisms("login"),
		WithReject("451 4.3.0 try later", "RCPT"),
	)
	if s.User() != "someone" || s.Pass() != "pa55word" {
		t.Errorf("User/Pass = %q/%q", s.User(), s.Pass())
	}
	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{RootCAs: s.RootCAs()})
	if err != nil {
		t.Fatal(err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "LOGIN" {
		t.Errorf("AUTH = %v %q, want LOGIN only", ok, mechs)
	}
	err = send(t, c, sasl.NewLoginClient("someone", "pa55word"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Errorf("RCPT: %v, want 451 4.3.0", err)
	}
	if n := len(s.Messages(t)); n != 0 {
		t.Errorf("%d messages captured, want 0", n)
	}

	// Refused at the final dot, relayed through Dovecot.
	s = Start(t, WithReject("554 5.6.0 refused", "."))
	c, err = smtp.DialTLS(s.TLSAddr(), &tls.Config{RootCAs: s.RootCAs()})
	if err != nil {
		t.Fatal(err)
	}
	err = send(t, c, sasl.NewPlainClient("", s.User(), s.Pass()))
	if !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) {
		t.Errorf("end of data: %v, want 554 5.6.0", err)
	}
	// A message refused at the dot is still captured.
	if n := len(s.Messages(t)); n != 1 {
		t.Errorf("%d messages captured, want 1", n)
	}
}

func TestCleanupStops(t *testing.T) {
	var s *Server
	t.Run("inner", func(t *testing.T) { s = Start(t) })
	if len(s.procs) != 2 {
		t.Fatalf("%d processes recorded, want 2", len(s.procs))
	}
	for _, p := range s.procs {
		select {
		case <-p.exited:
		default:
			t.Errorf("%s (pid %d) still running after the test ended", p.cmd.Path, p.cmd.Process.Pid)
		}
	}
	for _, a := range []string{s.Addr(), s.TLSAddr(), s.SinkAddr()} {
		if c, err := smtp.Dial(a); err == nil {
			c.Close()
			t.Errorf("%s still answers", a)
		}
	}
}

func TestParseCapture(t *testing.T) {
	raw := "X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nX-Helo-Args: localhost\n" +
		"X-Mail-Args: <> BODY=8BITMIME\nX-Rcpt-Args: <b@example.com> NOTIFY=NEVER\n" +
		"Received: from localhost ([127.0.0.1])\n\tby sink.localhost (smtp-sink) with ESMTP id 1;\n\tSat, 21 Nov 2026 06:49:33 +0000 (UTC)\n" +
		"Subject: hi\n\nbody\n\n"
	c, err := parseCapture([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if c.From != "" || c.MailArgs != "<> BODY=8BITMIME" || len(c.To) != 1 || c.To[0] != "b@example.com" ||
		c.RcptArgs[0] != "<b@example.com> NOTIFY=NEVER" || c.Helo != "localhost" {
		t.Errorf("envelope = %+v", c)
	}
	if got := string(c.Data); got != "Subject: hi\r\n\r\nbody\r\n" {
		t.Errorf("Data = %q", got)
	}
	for _, nodata := range []string{"", "X-Mail-Args: <a@b>\nX-Rcpt-Args: <c@d>\n"} {
		if _, err := parseCapture([]byte(nodata)); !errors.Is(err, errNoData) {
			t.Errorf("parseCapture(%q) = %v, want errNoData", nodata, err)
		}
	}
	for _, bad := range []string{"garbage\nReceived: x\n", "Received: x\n\ty\n", "X-Mail-Args: <a@b>\nReceived: x\n\ty"} {
		if _, err := parseCapture([]byte(bad)); err == nil || errors.Is(err, errNoData) {
			t.Errorf("parseCapture(%q) = %v, want a format error", bad, err)
		}
	}
}

// A port taken by someone else between freePorts and our bind is noticed
// by its greeting, so Start retries instead of testing the wrong server.
func TestForeignGreeting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 localhost Dovecot (Debian) ready.\r\n"))
			c.Close()
		}
	}()
	s := &Server{id: "0123456789ab"}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := s.checkGreeting(c); !errors.Is(err, errPortTaken) {
		t.Errorf("checkGreeting = %v, want errPortTaken", err)
	}
}
