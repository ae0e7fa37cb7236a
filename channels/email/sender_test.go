package email

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"

	"github.com/therapistinbox/gateway/channels/email/mailtest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

const (
	practice = "practice@example.org"
	client   = "client.fixture@example.com"
)

func mustStart(t *testing.T, opts ...mailtest.Option) *mailtest.Server {
	t.Helper()
	srv, err := mailtest.Start(opts...)
	if err != nil {
		t.Fatalf("mailtest.Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func mustSender(t *testing.T, cfg SMTPConfig) *Sender {
	t.Helper()
	if cfg.From == "" {
		cfg.From = practice
	}
	if cfg.Security == "" {
		cfg.Security = SecurityNone
	}
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return s
}

func waitOne(t *testing.T, srv *mailtest.Server) mailtest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := srv.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	return msgs[0]
}

// part is one decoded leaf of a message.
type part struct {
	typ, charset, body string
}

func mustRead(t *testing.T, raw []byte) (*mail.Header, []part) {
	t.Helper()
	mr, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("CreateReader: %v", err)
	}
	var parts []part
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("NextPart: %v", err)
		}
		h, ok := p.Header.(*mail.InlineHeader)
		if !ok {
			t.Fatalf("part %d is not inline", len(parts))
		}
		typ, params, _ := h.ContentType()
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		parts = append(parts, part{typ, params["charset"], string(b)})
	}
	return &mr.Header, parts
}

func mustAddress(t *testing.T, h *mail.Header, key string) *mail.Address {
	t.Helper()
	l, err := h.AddressList(key)
	if err != nil || len(l) != 1 {
		t.Fatalf("%s: %v, %v", key, l, err)
	}
	return l[0]
}

func TestSendAck(t *testing.T) {
	srv := mustStart(t)
	s := mustSender(t, SMTPConfig{Addr: srv.Addr, FromName: "Dr. Rivera's practice"})
	now := time.Date(2025, 3, 4, 10, 30, 0, 0, time.UTC)
	s.now = func() time.Time { return now }

	id, err := s.Send(context.Background(), envelope.Outbound{
		ID: 7, Channel: envelope.Email, Kind: envelope.KindAck,
		To: client, ToName: "Casey Client",
		Subject:    "Re: next week",
		Text:       "Thanks, your message arrived.\nDr. Rivera reads mail on Tuesdays.\n",
		InReplyTo:  "<orig-2@client.example>",
		References: []string{"orig-1@client.example"},
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := waitOne(t, srv)
	if m.From != practice {
		t.Errorf("MAIL FROM = %q, want %q", m.From, practice)
	}
	if len(m.To) != 1 || m.To[0] != client {
		t.Errorf("RCPT TO = %q, want [%q]", m.To, client)
	}
	if m.Hello != "example.org" {
		t.Errorf("EHLO = %q, want example.org", m.Hello)
	}
	if !bytes.Contains(m.Data, []byte("\r\n\r\n")) || bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("message is not CRLF-terminated:\n%s", m.Data)
	}

	h, parts := mustRead(t, m.Data)
	if a := mustAddress(t, h, "From"); a.Address != practice || a.Name != "Dr. Rivera's practice" {
		t.Errorf("From = %+v", a)
	}
	if a := mustAddress(t, h, "To"); a.Address != client || a.Name != "Casey Client" {
		t.Errorf("To = %+v", a)
	}
	if got, _ := h.Subject(); got != "Re: next week" {
		t.Errorf("Subject = %q", got)
	}
	if got := h.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q, want auto-replied", got)
	}
	if got := h.Get("X-Auto-Response-Suppress"); got != "All" {
		t.Errorf("X-Auto-Response-Suppress = %q, want All", got)
	}
	if got, _ := h.MsgIDList("In-Reply-To"); len(got) != 1 || got[0] != "orig-2@client.example" {
		t.Errorf("In-Reply-To = %q", got)
	}
	if got, _ := h.MsgIDList("References"); strings.Join(got, " ") != "orig-1@client.example orig-2@client.example" {
		t.Errorf("References = %q", got)
	}
	mid, _ := h.MessageID()
	if mid != string(id) {
		t.Errorf("Message-ID = %q, Send returned %q", mid, id)
	}
	if !strings.HasSuffix(mid, "@example.org") || strings.ContainsAny(mid, "<>") {
		t.Errorf("Message-ID = %q, want …@example.org without brackets", mid)
	}
	if got, _ := h.Date(); !got.Equal(now) {
		t.Errorf("Date = %v, want %v", got, now)
	}
	if got := h.Get("Content-Transfer-Encoding"); got != "quoted-printable" {
		t.Errorf("Content-Transfer-Encoding = %q", got)
	}
	if len(parts) != 1 {
		t.Fatalf("got %d parts, want 1", len(parts))
	}
	want := part{"text/plain", "utf-8", "Thanks, your message arrived.\r\nDr. Rivera reads mail on Tuesdays.\r\n"}
	if parts[0] != want {
		t.Errorf("body = %+v, want %+v", parts[0], want)
	}
}

func TestSendNonASCII(t *testing.T) {
	srv := mustStart(t)
	s := mustSender(t, SMTPConfig{Addr: srv.Addr, FromName: "Praxis Dr. Müller"})
	_, err := s.Send(context.Background(), envelope.Outbound{
		Channel: envelope.Email, Kind: envelope.KindHelp,
		To: client, ToName: "Zoë Ångström",
		Subject: "Grüße – Ihr Termin",
		Text:    "Schöne Grüße\n",
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := waitOne(t, srv)
	for _, b := range m.Data {
		if b >= 0x80 {
			t.Fatalf("raw message has 8-bit bytes:\n%s", m.Data)
		}
	}
	if !bytes.Contains(m.Data, []byte("=?utf-8?")) {
		t.Errorf("no RFC 2047 encoded word in:\n%s", m.Data)
	}
	h, parts := mustRead(t, m.Data)
	if a := mustAddress(t, h, "From"); a.Name != "Praxis Dr. Müller" {
		t.Errorf("From name = %q", a.Name)
	}
	if a := mustAddress(t, h, "To"); a.Name != "Zoë Ångström" {
		t.Errorf("To name = %q", a.Name)
	}
	if got, _ := h.Subject(); got != "Grüße – Ihr Termin" {
		t.Errorf("Subject = %q", got)
	}
	if len(parts) != 1 || parts[0].body != "Schöne Grüße\r\n" {
		t.Errorf("body = %+v", parts)
	}
}

func TestSendDigestHTML(t *testing.T) {
	srv := mustStart(t)
	s := mustSender(t, SMTPConfig{Addr: srv.Addr})
	_, err := s.Send(context.Background(), envelope.Outbound{
		Channel: envelope.Email, Kind: envelope.KindDigest,
		To: "therapist@example.org", Subject: "Check-in digest",
		Text: "3 new messages\n", HTML: "<p>3 new messages</p>\n",
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	h, parts := mustRead(t, waitOne(t, srv).Data)
	if typ, _, _ := h.ContentType(); typ != "multipart/alternative" {
		t.Errorf("Content-Type = %q, want multipart/alternative", typ)
	}
	if got := h.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted = %q, want auto-generated", got)
	}
	if h.Has("In-Reply-To") || h.Has("References") {
		t.Errorf("unexpected threading headers")
	}
	want := []part{
		{"text/plain", "utf-8", "3 new messages\r\n"},
		{"text/html", "utf-8", "<p>3 new messages</p>\r\n"},
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

func TestAutoSubmittedByKind(t *testing.T) {
	s := mustSender(t, SMTPConfig{Addr: "127.0.0.1:25"})
	tests := []struct {
		kind envelope.Kind
		want string
	}{
		{envelope.KindAck, "auto-replied"},
		{envelope.KindAckRepeat, "auto-replied"},
		{envelope.KindUrgentReply, "auto-replied"},
		{envelope.KindHelp, "auto-replied"},
		{envelope.KindDigest, "auto-generated"},
		{envelope.KindOnCall, "auto-generated"},
		{envelope.KindEscalation, "auto-generated"},
		{envelope.KindNotice, "auto-generated"},
		{envelope.KindRelay, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			raw, _, err := s.build(envelope.Outbound{Channel: envelope.Email, Kind: tt.kind, To: client, Text: "x"})
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			h, _ := mustRead(t, raw)
			if got := h.Get("Auto-Submitted"); got != tt.want {
				t.Errorf("Auto-Submitted = %q, want %q", got, tt.want)
			}
			wantSuppress := ""
			if tt.want != "" {
				wantSuppress = "All"
			}
			if got := h.Get("X-Auto-Response-Suppress"); got != wantSuppress {
				t.Errorf("X-Auto-Response-Suppress = %q, want %q", got, wantSuppress)
			}
		})
	}
}

func TestSendRejected(t *testing.T) {
	srv := mustStart(t)
	s := mustSender(t, SMTPConfig{Addr: srv.Addr})
	out := envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindAck, To: client, ToName: "Casey Client", Subject: "Re: hi", Text: "ok"}
	tests := []struct {
		code      int
		permanent bool
		wantCode  string
	}{
		{451, false, ""},
		{550, true, "550 5.1.1"},
		{554, true, "554 5.1.1"},
	}
	for _, tt := range tests {
		srv.Reject(tt.code)
		_, err := s.Send(context.Background(), out)
		if err == nil {
			t.Fatalf("%d: Send succeeded", tt.code)
		}
		if got := envelope.IsPermanent(err); got != tt.permanent {
			t.Errorf("%d: IsPermanent = %v, want %v (%v)", tt.code, got, tt.permanent, err)
		}
		for _, leak := range []string{client, "Casey", "mailtest"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%d: error %q contains %q", tt.code, err, leak)
			}
		}
		var pe *envelope.PermanentError
		if errors.As(err, &pe) && pe.Code != tt.wantCode {
			t.Errorf("%d: code = %q, want %q", tt.code, pe.Code, tt.wantCode)
		}
		var se *smtp.SMTPError
		if !tt.permanent && (!errors.As(err, &se) || se.Code != tt.code) {
			t.Errorf("%d: error %v does not wrap an SMTPError with the code", tt.code, err)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("server accepted %d messages while rejecting", n)
	}
	srv.Reject(0)
	if _, err := s.Send(context.Background(), out); err != nil {
		t.Fatalf("Send after Reject(0): %v", err)
	}
	waitOne(t, srv)
}

// selfSigned returns a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailtest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestSendTLSAuth(t *testing.T) {
	cert, pool := selfSigned(t)
	tests := []struct {
		security string
		opt      func(tls.Certificate) mailtest.Option
	}{
		{SecurityStartTLS, mailtest.WithTLS},
		{SecurityTLS, mailtest.WithImplicitTLS},
	}
	for _, tt := range tests {
		t.Run(tt.security, func(t *testing.T) {
			srv := mustStart(t, tt.opt(cert), mailtest.WithAuth("gw-user", "s3cret"))
			cfg := SMTPConfig{
				Addr: srv.Addr, Security: tt.security,
				Username: "gw-user", Password: "s3cret",
				TLSConfig: &tls.Config{RootCAs: pool},
			}
			s := mustSender(t, cfg)
			out := envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindNotice, To: client, Subject: "Notice", Text: "hello"}
			if _, err := s.Send(context.Background(), out); err != nil {
				t.Fatalf("Send: %v", err)
			}
			m := waitOne(t, srv)
			if !m.TLS || m.User != "gw-user" || m.Hello != "example.org" {
				t.Errorf("TLS=%v User=%q Hello=%q, want true gw-user example.org", m.TLS, m.User, m.Hello)
			}

			cfg.Password = "wrong"
			_, err := mustSender(t, cfg).Send(context.Background(), out)
			var pe *envelope.PermanentError
			if !errors.As(err, &pe) || pe.Reason != "smtp auth failed" || pe.Code != "535 5.7.8" {
				t.Errorf("wrong password: err = %v, want permanent smtp auth failed (535 5.7.8)", err)
			}

			// Without our CA the server's certificate is refused.
			cfg.Password = "s3cret"
			cfg.TLSConfig = nil
			_, err = mustSender(t, cfg).Send(context.Background(), out)
			if err == nil || envelope.IsPermanent(err) {
				t.Errorf("untrusted certificate: err = %v, want a transient error", err)
			}
			if n := len(srv.Messages()); n != 1 {
				t.Errorf("server holds %d messages, want 1", n)
			}
		})
	}
}

func TestSendContext(t *testing.T) {
	// A server that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	out := envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindAck, To: client, Text: "x"}

	t.Run("cancelled", func(t *testing.T) {
		s := mustSender(t, SMTPConfig{Addr: ln.Addr().String()})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		_, err := s.Send(ctx, out)
		if !errors.Is(err, context.Canceled) || envelope.IsPermanent(err) {
			t.Errorf("err = %v, want transient context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		s := mustSender(t, SMTPConfig{Addr: ln.Addr().String()})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := s.Send(ctx, out)
		if !errors.Is(err, context.DeadlineExceeded) || envelope.IsPermanent(err) {
			t.Errorf("err = %v, want transient context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s := mustSender(t, SMTPConfig{Addr: ln.Addr().String(), Timeout: 200 * time.Millisecond})
		start := time.Now()
		_, err := s.Send(context.Background(), out)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || envelope.IsPermanent(err) {
			t.Errorf("err = %v, want a transient timeout", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v", d)
		}
	})
}

func TestSendBadInput(t *testing.T) {
	s := mustSender(t, SMTPConfig{Addr: "127.0.0.1:1"})
	for _, out := range []envelope.Outbound{
		{Channel: envelope.SMS, Kind: envelope.KindAck, To: "+15550100001", Text: "x"},
		{Channel: envelope.Email, Kind: envelope.KindAck, To: "not an address", Text: "x"},
		{Channel: envelope.Email, Kind: envelope.KindAck, To: "Casey <" + client + ">", Text: "x"},
	} {
		_, err := s.Send(context.Background(), out)
		if !envelope.IsPermanent(err) {
			t.Errorf("To %q: err = %v, want permanent", out.To, err)
		}
		if err != nil && strings.Contains(err.Error(), client) {
			t.Errorf("error %q contains the address", err)
		}
	}
}

func TestNewSender(t *testing.T) {
	tests := []struct {
		name string
		cfg  SMTPConfig
		ok   bool
	}{
		{"loopback none", SMTPConfig{Addr: "127.0.0.1:2525", Security: "none", From: practice}, true},
		{"localhost none", SMTPConfig{Addr: "localhost:2525", Security: "none", From: practice}, true},
		{"ipv6 loopback none", SMTPConfig{Addr: "[::1]:2525", Security: "none", From: practice}, true},
		{"remote none", SMTPConfig{Addr: "smtp.example.org:25", Security: "none", From: practice}, false},
		{"remote none allowed", SMTPConfig{Addr: "smtp.example.org:25", Security: "none", AllowPlain: true, From: practice}, true},
		{"remote none with auth", SMTPConfig{Addr: "smtp.example.org:25", Security: "none", AllowPlain: true, Username: "u", Password: "p", From: practice}, false},
		{"loopback none with auth", SMTPConfig{Addr: "127.0.0.1:25", Security: "none", Username: "u", Password: "p", From: practice}, true},
		{"starttls", SMTPConfig{Addr: "smtp.example.org:587", Security: "starttls", Username: "u", Password: "p", From: practice}, true},
		{"tls", SMTPConfig{Addr: "smtp.example.org:465", Security: "tls", From: practice}, true},
		{"unknown security", SMTPConfig{Addr: "smtp.example.org:587", Security: "ssl", From: practice}, false},
		{"no port", SMTPConfig{Addr: "smtp.example.org", Security: "tls", From: practice}, false},
		{"bad from", SMTPConfig{Addr: "smtp.example.org:465", Security: "tls", From: "practice"}, false},
		{"named from", SMTPConfig{Addr: "smtp.example.org:465", Security: "tls", From: "P <" + practice + ">"}, false},
		{"user without password", SMTPConfig{Addr: "smtp.example.org:465", Security: "tls", Username: "u", From: practice}, false},
		{"negative timeout", SMTPConfig{Addr: "smtp.example.org:465", Security: "tls", From: practice, Timeout: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSender(tt.cfg)
			if got := err == nil; got != tt.ok {
				t.Errorf("NewSender ok = %v, want %v (err: %v)", got, tt.ok, err)
			}
		})
	}

	// All problems are reported together.
	_, err := NewSender(SMTPConfig{Addr: "x", Security: "ssl", From: "y"})
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("err = %v, want three problems", err)
	}
}

func TestMailtestWait(t *testing.T) {
	srv := mustStart(t)
	s := mustSender(t, SMTPConfig{Addr: srv.Addr})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := srv.Wait(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on empty server: %v", err)
	}
	errc := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := s.Send(context.Background(), envelope.Outbound{Channel: envelope.Email, Kind: envelope.KindRelay, To: client, Text: "x"})
			errc <- err
		}()
	}
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	msgs, err := srv.Wait(ctx2, 3)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("Wait: %d messages, %v", len(msgs), err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Close(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		t.Fatalf("second Close: %v", err)
	}
}
