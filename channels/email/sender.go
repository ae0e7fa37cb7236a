// Package email is the gateway's mail channel: it sends the gateway's
// outbound mail over SMTP submission.
package email

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// DefaultTimeout bounds each SMTP command (and the TLS handshake) when
// SMTPConfig.Timeout is zero: 30 s.
const DefaultTimeout = 30 * time.Second

// The values of SMTPConfig.Security.
const (
	SecurityTLS      = "tls"      // implicit TLS, usually port 465 (RFC 8314)
	SecurityStartTLS = "starttls" // STARTTLS, usually port 587 (RFC 3207)
	SecurityNone     = "none"     // plain text; loopback only unless AllowPlain
)

// SMTPConfig says how to reach the submission server.
type SMTPConfig struct {
	Addr string // host:port
	// Security is "tls" (implicit, 465), "starttls" (587) or "none" (plain;
	// only allowed when Addr is loopback unless AllowPlain).
	Security   string
	AllowPlain bool
	// Username and Password are used when Username != "": AUTH PLAIN, or
	// AUTH LOGIN when the server offers only that. They are never sent over
	// a plain connection to a non-loopback host.
	Username, Password string
	From               string        // the practice address, e.g. "practice@example.org"
	FromName           string        // e.g. "Dr. Rivera's practice"; may be non-ASCII (RFC 2047)
	HelloName          string        // EHLO name; default: the domain of From
	TLSConfig          *tls.Config   // optional (tests pass RootCAs)
	Timeout            time.Duration // per command; default DefaultTimeout
}

// Sender sends outbound mail through one submission server, one recipient
// per SMTP transaction. It is safe for concurrent use; each Send opens its
// own connection.
type Sender struct {
	cfg      SMTPConfig
	host     string // host part of cfg.Addr
	loopback bool   // host is a loopback address
	domain   string // domain of cfg.From; the Message-ID hostname
	now      func() time.Time
}

// NewSender checks cfg and returns a Sender. It reports every problem at
// once.
func NewSender(cfg SMTPConfig) (*Sender, error) {
	var errs []error
	addf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" || port == "" {
		addf("smtp addr: %q is not host:port; write e.g. \"smtp.example.org:587\"", cfg.Addr)
	}
	loopback := isLoopback(host)

	switch cfg.Security {
	case SecurityTLS, SecurityStartTLS:
	case SecurityNone:
		if host != "" && !loopback && !cfg.AllowPlain {
			addf("smtp security: \"none\" sends mail in clear text to a non-loopback host; use \"tls\" or \"starttls\" (or set allow_plain)")
		}
		if host != "" && !loopback && cfg.Username != "" {
			addf("smtp security: \"none\" would send the password in clear text to a non-loopback host; use \"tls\" or \"starttls\"")
		}
	default:
		addf("smtp security: %q is unknown; write \"tls\", \"starttls\" or \"none\"", cfg.Security)
	}
	if cfg.Username != "" && cfg.Password == "" {
		addf("smtp password: empty while a username is set")
	}
	if hasCtl(cfg.Username) || hasCtl(cfg.Password) {
		addf("smtp username/password: contain control characters")
	}

	domain := ""
	if a, err := netmail.ParseAddress(cfg.From); err != nil || a.Name != "" || a.Address != cfg.From {
		addf("smtp from: %q is not a bare address; write e.g. \"practice@example.org\"", cfg.From)
	} else {
		domain = cfg.From[strings.LastIndexByte(cfg.From, '@')+1:]
	}
	if hasCtl(cfg.FromName) {
		addf("smtp from_name: contains control characters")
	}
	if cfg.HelloName == "" {
		cfg.HelloName = domain
	} else if strings.ContainsAny(cfg.HelloName, " \t\r\n") {
		addf("smtp hello_name: %q contains white space; write a host name", cfg.HelloName)
	}
	if cfg.Timeout < 0 {
		addf("smtp timeout: %v is negative", cfg.Timeout)
	} else if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Sender{cfg: cfg, host: host, loopback: loopback, domain: domain, now: time.Now}, nil
}

// Send delivers m, which must be an email, to its single recipient and
// returns the Message-ID it gave the mail (without angle brackets).
//
// An SMTP 5xx reply gives an *envelope.PermanentError; a 4xx reply, a
// network error or a timeout gives a plain (transient) error. No error
// carries the recipient, the server's reply text or the content.
func (s *Sender) Send(ctx context.Context, m envelope.Outbound) (envelope.ProviderID, error) {
	if m.Channel != envelope.Email {
		return "", envelope.Permanent("", "not an email message")
	}
	if a, err := netmail.ParseAddress(m.To); err != nil || a.Name != "" || a.Address != m.To {
		return "", envelope.Permanent("", "invalid recipient address")
	}
	msg, id, err := s.build(m)
	if err != nil {
		return "", fmt.Errorf("smtp: build message: %w", err)
	}
	if err := s.deliver(ctx, m, msg); err != nil {
		return "", err
	}
	return envelope.ProviderID(id), nil
}

// autoSubmitted returns the RFC 3834 §5 Auto-Submitted value for a kind:
// "auto-replied" for direct answers to a client's message, "" for a
// therapist's relayed reply, and "auto-generated" for everything else, so
// that an unknown kind is still marked as not written by a person.
func autoSubmitted(k envelope.Kind) string {
	switch k {
	case envelope.KindAck, envelope.KindAckRepeat, envelope.KindUrgentReply, envelope.KindHelp:
		return "auto-replied"
	case envelope.KindRelay:
		return ""
	default: // digest, oncall, escalation, notice
		return "auto-generated"
	}
}

// build renders m as an RFC 5322 message and returns it with its
// Message-ID.
func (s *Sender) build(m envelope.Outbound) ([]byte, string, error) {
	var h mail.Header
	h.SetDate(s.now())
	// Not go-message's SetSubject/SetAddressList: their 75-character
	// encoded words don't fit after "Subject: ", and the whole field then
	// stays on one line, beyond RFC 2047 §2's 76 characters.
	h.Set("From", formatAddress(s.cfg.FromName, s.cfg.From))
	h.Set("To", formatAddress(m.ToName, m.To))
	if m.Subject != "" {
		h.Set("Subject", encodeText(oneLine(m.Subject)))
	}
	if err := h.GenerateMessageIDWithHostname(s.domain); err != nil {
		return nil, "", err
	}
	id, err := h.MessageID()
	if err != nil {
		return nil, "", err
	}
	// RFC 5322 §3.6.4: References is the parent's References followed by
	// the parent's Message-ID. Append the parent when the caller left it out.
	parent := cleanMsgID(m.InReplyTo)
	var refs []string
	for _, r := range m.References {
		if r = cleanMsgID(r); r != "" {
			refs = append(refs, r)
		}
	}
	if parent != "" {
		h.SetMsgIDList("In-Reply-To", []string{parent})
		if len(refs) == 0 || refs[len(refs)-1] != parent {
			refs = append(refs, parent)
		}
	}
	h.SetMsgIDList("References", refs)
	if v := autoSubmitted(m.Kind); v != "" {
		h.Set("Auto-Submitted", v) // RFC 3834 §5
		// Ask Exchange and Outlook not to answer our automatic mail
		// (MS-OXCMAIL §2.1.3.2.20).
		h.Set("X-Auto-Response-Suppress", "All")
	}

	var buf bytes.Buffer
	if m.HTML == "" {
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		w, err := mail.CreateSingleInlineWriter(&buf, h) // quoted-printable
		if err != nil {
			return nil, "", err
		}
		if _, err := io.WriteString(w, m.Text); err != nil {
			return nil, "", err
		}
		if err := w.Close(); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), id, nil
	}
	w, err := mail.CreateInlineWriter(&buf, h) // multipart/alternative
	if err != nil {
		return nil, "", err
	}
	// RFC 2046 §5.1.4: the preferred (richest) alternative goes last.
	for _, p := range []struct{ typ, body string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
		var ph mail.InlineHeader
		ph.SetContentType(p.typ, map[string]string{"charset": "utf-8"})
		pw, err := w.CreatePart(ph)
		if err != nil {
			return nil, "", err
		}
		if _, err := io.WriteString(pw, p.body); err != nil {
			return nil, "", err
		}
		if err := pw.Close(); err != nil {
			return nil, "", err
		}
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), id, nil
}

// deliver runs one SMTP session: connect, EHLO, AUTH, one transaction,
// QUIT.
func (s *Sender) deliver(ctx context.Context, m envelope.Outbound, msg []byte) (err error) {
	stage := "dial"
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("smtp: %s: %w", stage, err)
	}
	// Every error leaves through here, so none can carry the recipient or
	// the server's reply text.
	defer func() {
		if err != nil {
			err = s.rewrap(ctx, stage, err, m)
		}
	}()

	d := net.Dialer{Timeout: s.cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	// go-smtp sets its own deadline before each command, which would
	// override one taken from ctx; closing the connection when ctx ends
	// interrupts whatever is in flight instead.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	conn := &boundedConn{Conn: raw, timeout: s.cfg.Timeout}
	if err := conn.SetDeadline(time.Time{}); err != nil { // bounds the greeting
		raw.Close()
		return err
	}

	var c *smtp.Client
	switch s.cfg.Security {
	case SecurityTLS:
		stage = "tls"
		tc := tls.Client(conn, s.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return err
		}
		c = smtp.NewClient(tc)
	case SecurityStartTLS:
		stage = "starttls"
		// go-smtp has no exported STARTTLS on a Client, so the EHLO before
		// STARTTLS says "localhost"; the EHLO after it uses HelloName.
		c, err = smtp.NewClientStartTLS(conn, s.tlsConfig())
		if err != nil {
			raw.Close()
			return err
		}
	default:
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	c.CommandTimeout = s.cfg.Timeout
	c.SubmissionTimeout = s.cfg.Timeout

	stage = "hello"
	if err := c.Hello(s.cfg.HelloName); err != nil {
		return err
	}
	if s.cfg.Username != "" {
		stage = "auth"
		if _, isTLS := c.TLSConnectionState(); !isTLS && !s.loopback {
			return errors.New("refusing to send credentials in clear text")
		}
		auth, err := s.saslClient(c)
		if err != nil {
			return err
		}
		if err := c.Auth(auth); err != nil {
			return err
		}
	}

	stage = "mail"
	var mopts *smtp.MailOptions
	if !isASCII(s.cfg.From) || !isASCII(m.To) {
		mopts = &smtp.MailOptions{UTF8: true} // RFC 6531
	}
	if err := c.Mail(s.cfg.From, mopts); err != nil {
		return err
	}
	stage = "rcpt"
	var ropts *smtp.RcptOptions
	if autoSubmitted(m.Kind) == "auto-replied" {
		// RFC 3834 §3.3: no bounce for an auto-reply. go-smtp sends it only
		// when the server offers DSN.
		ropts = &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever}}
	}
	if err := c.Rcpt(m.To, ropts); err != nil {
		return err
	}
	stage = "data"
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	// The server has taken the message; a failed QUIT must not make the
	// outbox send it again.
	_ = c.Quit()
	return nil
}

// saslClient picks AUTH PLAIN, or AUTH LOGIN when the server offers only
// that (older Exchange and some hosted relays). Both send the password as
// it is, hence TLS or loopback only.
func (s *Sender) saslClient(c *smtp.Client) (sasl.Client, error) {
	switch {
	case c.SupportsAuth(sasl.Plain):
		return sasl.NewPlainClient("", s.cfg.Username, s.cfg.Password), nil
	case c.SupportsAuth(sasl.Login):
		return sasl.NewLoginClient(s.cfg.Username, s.cfg.Password), nil
	}
	return nil, errors.New("server offers neither AUTH PLAIN nor AUTH LOGIN")
}

// boundedConn caps every deadline at timeout from the moment it is set.
// go-smtp uses a 5-minute default before the caller can lower
// Client.CommandTimeout (for the greeting and the EHLO that precedes
// STARTTLS) and clears deadlines between commands; this keeps each step
// within SMTPConfig.Timeout.
type boundedConn struct {
	net.Conn
	timeout time.Duration
}

func (c *boundedConn) bound(t time.Time) time.Time {
	limit := time.Now().Add(c.timeout)
	if t.IsZero() || t.After(limit) {
		return limit
	}
	return t
}

func (c *boundedConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.bound(t)) }

func (c *boundedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.bound(t))
}

func (c *boundedConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.bound(t))
}

// tlsConfig returns the TLS configuration to use, with ServerName set to
// the host of Addr so the certificate is checked against it.
func (s *Sender) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if s.cfg.TLSConfig != nil {
		cfg = s.cfg.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = s.host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg
}

// rewrap turns err into the error Send returns: an SMTP 5xx becomes an
// *envelope.PermanentError holding only the codes; a 4xx keeps its codes
// but loses the server's text, which can echo the recipient (STYLE §5).
func (s *Sender) rewrap(ctx context.Context, stage string, err error, m envelope.Outbound) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("smtp: %s: %w", stage, ctxErr)
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		code, msg := strconv.Itoa(se.Code), "temporary failure"
		if e := se.EnhancedCode; e != smtp.EnhancedCodeNotSet && e != smtp.NoEnhancedCode {
			enh := fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
			code, msg = code+" "+enh, enh+" "+msg
		}
		if se.Code/100 == 5 {
			reason := "smtp refused"
			if stage == "auth" {
				reason = "smtp auth failed"
			}
			return fmt.Errorf("smtp: %s: %w", stage, envelope.Permanent(code, reason))
		}
		// A 4xx (or an unexpected reply) is retried. Keep the codes so
		// callers can still errors.As an *smtp.SMTPError, drop the text.
		return fmt.Errorf("smtp: %s: %w", stage, &smtp.SMTPError{
			Code:         se.Code,
			EnhancedCode: se.EnhancedCode,
			Message:      msg,
		})
	}
	// Network, TLS and go-smtp's own errors name the server, not the
	// recipient. Check anyway, in case a library starts quoting more.
	text := strings.ToLower(err.Error())
	if strings.Contains(text, strings.ToLower(m.To)) ||
		(m.ToName != "" && strings.Contains(text, strings.ToLower(m.ToName))) {
		return fmt.Errorf("smtp: %s: failed (details withheld)", stage)
	}
	return fmt.Errorf("smtp: %s: %w", stage, err)
}

// isLoopback reports whether host is "localhost" or a loopback IP. It does
// not resolve names.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cleanMsgID strips white space and angle brackets from a message id and
// returns "" when what is left cannot be one.
func cleanMsgID(id string) string {
	id = strings.TrimSpace(id)
	id = strings.TrimSuffix(strings.TrimPrefix(id, "<"), ">")
	if id == "" || strings.ContainsAny(id, "<> \t\r\n") {
		return ""
	}
	return id
}

// maxWordLen bounds each RFC 2047 encoded word we write: after "Subject: "
// one still fits the 76 characters RFC 2047 §2 allows on a line, so
// go-message folds between words.
const maxWordLen = 66

// encodeText returns an unstructured header value (Subject): as it is when
// it is printable ASCII, else as encoded words. A literal "=?" is encoded
// too, or readers would decode it.
func encodeText(s string) string {
	if isPrintableASCII(s) && !strings.Contains(s, "=?") {
		return s
	}
	return encodeWords(s, false)
}

// formatAddress returns "name <addr>" for an address header: Go's quoting
// for ASCII names, encoded words otherwise.
func formatAddress(name, addr string) string {
	name = oneLine(name)
	if isPrintableASCII(name) && !strings.Contains(name, "=?") {
		return (&mail.Address{Name: name, Address: addr}).String()
	}
	return encodeWords(name, true) + " " + (&mail.Address{Address: addr}).String()
}

// encodeWords returns s as RFC 2047 Q-encoded UTF-8 words of at most
// maxWordLen characters, separated by spaces, which decoders drop between
// encoded words (§6.2). In a phrase (a display name) only letters, digits
// and "!*+-/" may stay literal (§5(3)).
func encodeWords(s string, phrase bool) string {
	const prefix, suffix = "=?utf-8?q?", "?="
	var words []string
	var w strings.Builder
	for _, r := range s { // invalid UTF-8 comes out as U+FFFD
		enc := qEncode(r, phrase)
		if w.Len() > 0 && len(prefix)+w.Len()+len(enc)+len(suffix) > maxWordLen {
			words = append(words, prefix+w.String()+suffix)
			w.Reset()
		}
		w.WriteString(enc)
	}
	if w.Len() > 0 {
		words = append(words, prefix+w.String()+suffix)
	}
	return strings.Join(words, " ")
}

// qEncode returns one character in RFC 2047 Q encoding.
func qEncode(r rune, phrase bool) string {
	if r == ' ' {
		return "_"
	}
	if r > ' ' && r < 0x7f {
		c := byte(r)
		literal := c != '=' && c != '?' && c != '_'
		if phrase {
			literal = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
				strings.IndexByte("!*+-/", c) >= 0
		}
		if literal {
			return string(c)
		}
	}
	var b [utf8.UTFMax]byte
	var out strings.Builder
	for _, c := range b[:utf8.EncodeRune(b[:], r)] {
		fmt.Fprintf(&out, "=%02X", c)
	}
	return out.String()
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// oneLine replaces control characters (CR, LF, tab) with spaces, so a
// display name or subject cannot break the header.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func hasCtl(s string) bool { return oneLine(s) != s }

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
