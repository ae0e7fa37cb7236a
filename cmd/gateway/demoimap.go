package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// demoIMAP is the demo's in-process IMAP server: the practice mailbox, in
// memory, on loopback.
type demoIMAP struct {
	addr string
	user *imapmemserver.User
	srv  *imapserver.Server
}

func startDemoIMAP() (*demoIMAP, error) {
	mem := imapmemserver.New()
	user := imapmemserver.NewUser("practice@example.org", "demo")
	if err := user.Create("INBOX", nil); err != nil {
		return nil, err
	}
	mem.AddUser(user)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true, // loopback only
		Logger:       discardLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	return &demoIMAP{addr: ln.Addr().String(), user: user, srv: srv}, nil
}

func (d *demoIMAP) Close() error { return d.srv.Close() }

// deliver puts in into the mailbox as a client's mail client would have
// sent it, and returns the provider id the gateway will file it under.
func (d *demoIMAP) deliver(in envelope.Inbound, to string) (envelope.ProviderID, error) {
	id := fmt.Sprintf("demo-%d@mail.example.org", time.Now().UnixNano())
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\n",
		in.From, to, in.Subject, time.Now().Format(time.RFC1123Z), id)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString(strings.ReplaceAll(in.Text, "\n", "\r\n") + "\r\n")
	raw := []byte(b.String())
	if _, err := d.user.Append("INBOX", bytes.NewReader(raw), &imap.AppendOptions{}); err != nil {
		return "", err
	}
	return envelope.ProviderID(id), nil
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
