package imaptest

import (
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func msg(n int) []byte {
	return fmt.Appendf(nil, "Message-ID: <m%d@imaptest.test>\r\nFrom: a@example.org\r\nSubject: note %d\r\n\r\nbody %d\r\n", n, n, n)
}

func TestServer(t *testing.T) {
	start := time.Now()
	s := Start(t)
	t.Logf("started in %v", time.Since(start))

	// Implicit TLS with the harness's certificate.
	c, err := imapclient.DialTLS(s.TLSAddr(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: s.RootCAs()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(s.User(), s.Pass()).Wait(); err != nil {
		t.Fatalf("tls login: %v", err)
	}
	c.Close()

	// STARTTLS on the plaintext port; a bad password is refused.
	c, err = imapclient.DialStartTLS(s.Addr(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: s.RootCAs()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(s.User(), "wrong").Wait(); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	c.Close()

	s.Deliver(t, "INBOX", msg(1))
	s.Append(t, "INBOX", msg(2), msg(3))
	got := s.Fetch(t, "INBOX")
	if len(got) != 3 {
		t.Fatalf("Fetch = %+v, want 3 messages", got)
	}
	for i, m := range got {
		if m.UID != uint32(i+1) || m.Subject != fmt.Sprintf("note %d", i+1) || m.MessageID != fmt.Sprintf("<m%d@imaptest.test>", i+1) || m.Has(`\Seen`) {
			t.Errorf("message %d = %+v", i, m)
		}
	}
	if got := s.Fetch(t, "Missing"); len(got) != 0 {
		t.Errorf("Fetch(Missing) = %+v", got)
	}
	s.Deliver(t, "Archive", msg(4))
	if got := s.Fetch(t, "Archive"); len(got) != 1 {
		t.Errorf("Fetch(Archive) = %+v", got)
	}

	// Kick drops a logged-in client.
	c, err = s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if !s.Kick(t) {
		t.Fatal("Kick found no connection")
	}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("client still connected after Kick")
	}
	if s.Kick(t) {
		t.Error("second Kick found a connection")
	}

	before := s.UIDValidity(t, "INBOX")
	after := s.ResetUIDValidity(t, "INBOX")
	if after == before {
		t.Fatalf("UIDVALIDITY unchanged: %d", after)
	}
	if got := s.Fetch(t, "INBOX"); len(got) != 3 {
		t.Fatalf("messages after the reset: %+v", got)
	}
	c, err = s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.UIDValidity != after {
		t.Errorf("SELECT UIDVALIDITY = %d, want %d", sel.UIDValidity, after)
	}
}

func TestWithoutCapability(t *testing.T) {
	s := Start(t, WithoutCapability("IDLE", "MOVE"), WithUser("other", "secret"))
	c, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps := c.Caps()
	if caps.Has(imap.CapIdle) || caps.Has(imap.CapMove) || !caps.Has(imap.CapUIDPlus) {
		t.Errorf("caps = %v", caps)
	}
	if s.User() != "other" {
		t.Errorf("User = %q", s.User())
	}
}
