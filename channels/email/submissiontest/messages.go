package submissiontest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// waitPoll is how often Wait looks for new capture files.
const waitPoll = 20 * time.Millisecond

// Captured is one message as smtp-sink received it.
type Captured struct {
	File     string   // the capture file
	Helo     string   // the EHLO argument the sink saw ("localhost" when Dovecot relayed)
	MailArgs string   // the MAIL FROM argument with its parameters, e.g. "<a@b.example> BODY=8BITMIME"
	From     string   // the envelope sender without angle brackets ("" for <>)
	RcptArgs []string // each RCPT TO argument with its parameters, in order
	To       []string // the envelope recipients without angle brackets, in order
	// Data is the message with CRLF line endings, as the sink got it: when
	// relayed, Dovecot's Received header comes first.
	Data []byte
}

// Messages returns the messages captured so far, oldest first as far as
// the files' modification times tell (to a few milliseconds). A message
// is complete once its client has had the reply to the final dot. One the
// sink refuses at the final dot (WithReject(..., ".")) is captured too;
// transactions that ended before DATA are left out.
func (s *Server) Messages(t testing.TB) []Captured {
	t.Helper()
	msgs, err := s.messages()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// Wait waits until at least n messages have been captured and returns them
// all, in the order of Messages. It fails the test after timeout.
func (s *Server) Wait(t testing.TB, n int, timeout time.Duration) []Captured {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := s.messages()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("submissiontest: %d messages captured after %v, want %d", len(msgs), timeout, n)
		}
		time.Sleep(waitPoll)
	}
}

func (s *Server) messages() ([]Captured, error) {
	entries, err := os.ReadDir(s.msgs)
	if err != nil {
		return nil, fmt.Errorf("submissiontest: %w", err)
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("submissiontest: %w", err)
		}
		files = append(files, file{e.Name(), fi.ModTime()})
	}
	// Names carry only the second and a random suffix; the modification
	// time orders messages within a second.
	sort.Slice(files, func(i, j int) bool {
		if !files[i].mod.Equal(files[j].mod) {
			return files[i].mod.Before(files[j].mod)
		}
		return files[i].name < files[j].name
	})
	var msgs []Captured
	for _, f := range files {
		path := filepath.Join(s.msgs, f.name)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("submissiontest: %w", err)
		}
		c, err := parseCapture(b)
		if errors.Is(err, errNoData) {
			continue // a transaction refused (or still) before DATA
		}
		if err != nil {
			return nil, fmt.Errorf("submissiontest: %s: %w", f.name, err)
		}
		c.File = path
		msgs = append(msgs, c)
	}
	return msgs, nil
}

// errNoData marks a capture file without a message: smtp-sink opens it at
// MAIL FROM and writes its Received header only at DATA.
var errNoData = errors.New("no message data")

// parseCapture splits one smtp-sink dump file: its own X-… records, its
// three-line Received header, the message, and an empty line.
func parseCapture(b []byte) (Captured, error) {
	var c Captured
	rest := b
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return c, errNoData
		}
		line := string(rest[:i])
		rest = rest[i+1:]
		if strings.HasPrefix(line, "Received:") {
			break
		}
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			return c, fmt.Errorf("unexpected smtp-sink line %q", line)
		}
		switch name {
		case "X-Helo-Args":
			c.Helo = value
		case "X-Mail-Args":
			c.MailArgs = value
			c.From = pathAddr(value)
		case "X-Rcpt-Args":
			c.RcptArgs = append(c.RcptArgs, value)
			c.To = append(c.To, pathAddr(value))
		}
	}
	// The Received header's continuation lines.
	for len(rest) > 0 && (rest[0] == '\t' || rest[0] == ' ') {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return c, fmt.Errorf("truncated smtp-sink Received header")
		}
		rest = rest[i+1:]
	}
	if c.MailArgs == "" {
		return c, fmt.Errorf("no X-Mail-Args")
	}
	// The sink ends each dump with an empty line of its own.
	rest = bytes.TrimSuffix(rest, []byte("\n"))
	c.Data = bytes.ReplaceAll(rest, []byte("\n"), []byte("\r\n"))
	return c, nil
}

// pathAddr returns the address in an SMTP path argument
// ("<a@b.example> BODY=8BITMIME" gives "a@b.example").
func pathAddr(arg string) string {
	arg = strings.TrimSpace(arg)
	if strings.HasPrefix(arg, "<") {
		if i := strings.IndexByte(arg, '>'); i > 0 {
			return arg[1:i]
		}
	}
	addr, _, _ := strings.Cut(arg, " ")
	return addr
}
