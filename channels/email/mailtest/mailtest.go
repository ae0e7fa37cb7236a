// Package mailtest is an in-process SMTP capture server on 127.0.0.1 for
// tests and demos. It keeps every message it accepts in memory and can be
// told to refuse recipients, to offer STARTTLS and to require AUTH PLAIN.
package mailtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From  string   // MAIL FROM
	To    []string // RCPT TO, in order
	Data  []byte   // raw RFC 5322 message
	Hello string   // the client's EHLO name
	TLS   bool     // the transaction ran over TLS
	User  string   // the AUTH PLAIN user, "" when not authenticated
}

// Option configures a Server.
type Option func(*Server)

// WithTLS makes the server offer STARTTLS with cert. AUTH is then only
// offered after STARTTLS, as on a real submission server.
func WithTLS(cert tls.Certificate) Option {
	return func(s *Server) {
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
}

// WithImplicitTLS makes the server speak TLS from the first byte (as on
// port 465) with cert.
func WithImplicitTLS(cert tls.Certificate) Option {
	return func(s *Server) {
		WithTLS(cert)(s)
		s.implicitTLS = true
	}
}

// WithAuth makes the server offer AUTH PLAIN and require it before MAIL.
// Wrong credentials get 535 5.7.8.
func WithAuth(user, pass string) Option {
	return func(s *Server) { s.user, s.pass = user, pass }
}

// Server is a running capture server. Its methods are safe for concurrent
// use.
type Server struct {
	Addr string // host:port it listens on

	srv         *smtp.Server
	serveDone   chan struct{}
	sessions    sync.WaitGroup
	tlsConfig   *tls.Config
	implicitTLS bool
	user, pass  string

	mu       sync.Mutex
	closed   bool
	msgs     []Message
	reject   int
	arrived  chan struct{} // closed and replaced on every new message
	closeErr error
}

var _ smtp.Backend = (*Server)(nil)

// Start starts a server on 127.0.0.1 at a free port. It runs until Close.
func Start(opts ...Option) (*Server, error) {
	s := &Server{serveDone: make(chan struct{}), arrived: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("mailtest: listen: %w", err)
	}
	s.Addr = ln.Addr().String()
	if s.implicitTLS {
		ln = tls.NewListener(ln, s.tlsConfig)
	}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "localhost"
	s.srv.TLSConfig = s.tlsConfig
	s.srv.AllowInsecureAuth = s.tlsConfig == nil
	s.srv.EnableDSN = true
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() {
		defer close(s.serveDone)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Messages returns a copy of the accepted messages in arrival order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copyLocked()
}

func (s *Server) copyLocked() []Message {
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		m.To = append([]string(nil), m.To...)
		m.Data = append([]byte(nil), m.Data...)
		out[i] = m
	}
	return out
}

// Wait waits until at least n messages have arrived and returns them all,
// or returns ctx's error.
func (s *Server) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := s.copyLocked()
			s.mu.Unlock()
			return out, nil
		}
		ch := s.arrived
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Reject makes every RCPT fail with code (e.g. 451 for a transient
// failure, 550 for a permanent one) until Reject(0). Like many real
// servers, the reply text names the recipient.
func (s *Server) Reject(code int) {
	s.mu.Lock()
	s.reject = code
	s.mu.Unlock()
}

// Close stops the server, drops open connections and waits for their
// sessions to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	s.mu.Unlock()
	err := s.srv.Close()
	<-s.serveDone
	s.sessions.Wait()
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("server closed")
	}
	s.sessions.Add(1)
	_, isTLS := c.TLSConnectionState()
	return &session{srv: s, hello: c.Hostname(), tls: isTLS}, nil
}

// session is one SMTP connection (until STARTTLS, which starts a new one).
// go-smtp calls its methods from the connection's goroutine only.
type session struct {
	srv   *Server
	hello string
	tls   bool
	user  string
	from  string
	to    []string
}

var _ smtp.AuthSession = (*session)(nil)

func (se *session) AuthMechanisms() []string {
	if se.srv.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	if se.srv.user == "" || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if identity != "" && identity != user {
			return smtp.ErrAuthFailed
		}
		if user != se.srv.user || pass != se.srv.pass {
			return smtp.ErrAuthFailed
		}
		se.user = user
		return nil
	}), nil
}

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	if se.srv.user != "" && se.user == "" {
		return smtp.ErrAuthRequired
	}
	se.from = from
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	se.srv.mu.Lock()
	code := se.srv.reject
	se.srv.mu.Unlock()
	if code != 0 {
		ec := smtp.EnhancedCode{code / 100, 0, 0}
		switch {
		case code/100 == 5:
			ec = smtp.EnhancedCode{5, 1, 1}
		case code/100 == 4:
			ec = smtp.EnhancedCode{4, 3, 0}
		}
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "<" + to + ">: rejected by mailtest"}
	}
	se.to = append(se.to, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := Message{From: se.from, To: append([]string(nil), se.to...), Data: b, Hello: se.hello, TLS: se.tls, User: se.user}
	s := se.srv
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func (se *session) Reset() { se.from, se.to = "", nil }

func (se *session) Logout() error {
	se.srv.sessions.Done()
	return nil
}
