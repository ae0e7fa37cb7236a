// Package twiliotest is a small in-process stand-in for Twilio's Messages
// API (POST /2010-04-01/Accounts/{AccountSid}/Messages.json), for tests and
// the demo command. It listens on 127.0.0.1 and records what it accepts.
package twiliotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// maxBody is the largest request body the server reads, in bytes.
const maxBody = 1 << 20

// maxText is Twilio's limit on Body, in characters (error 21617).
const maxText = 1600

var messagesPath = regexp.MustCompile(`^/2010-04-01/Accounts/([^/]+)/Messages\.json$`)

// Message is one message the server accepted.
type Message struct {
	SID                 string
	AccountSID          string
	From                string
	To                  string
	Body                string
	MessagingServiceSID string
	StatusCallback      string
}

type answer struct {
	status int
	body   string
}

// Server is a running stand-in. URL is its base, e.g.
// "http://127.0.0.1:41234", suitable for sms.SenderConfig.APIBase.
type Server struct {
	URL string

	accountSID string
	srv        *http.Server
	done       chan struct{} // closed when Serve returns

	mu      sync.Mutex
	msgs    []Message
	fails   []answer
	changed chan struct{} // closed and replaced when msgs grows or on Close
	closed  bool
}

// Start starts a server on 127.0.0.1 with a free port that accepts
// requests authenticated as accountSID. It panics if it cannot listen, as
// httptest.NewServer does.
func Start(accountSID string) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("twiliotest: listen: " + err.Error())
	}
	s := &Server{
		URL:        "http://" + ln.Addr().String(),
		accountSID: accountSID,
		done:       make(chan struct{}),
		changed:    make(chan struct{}),
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s
}

// Close stops the server, drops open connections and wakes any Wait.
func (s *Server) Close() {
	s.srv.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.changed)
	}
}

// Messages returns a copy of the accepted messages in arrival order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait blocks until at least n messages were accepted and returns a copy of
// all of them. If ctx ends or the server closes first, it returns those
// accepted so far and an error.
func (s *Server) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		msgs := append([]Message(nil), s.msgs...)
		closed, ch := s.closed, s.changed
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs, nil
		}
		if closed {
			return msgs, fmt.Errorf("twiliotest: %d of %d messages: server closed", len(msgs), n)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Messages(), fmt.Errorf("twiliotest: %d of %d messages: %w", len(msgs), n, ctx.Err())
		}
	}
}

// Fail queues a scripted answer for the next POST to the Messages
// endpoint: Fail(429, `{"code":20429,"message":"Too Many Requests","status":429}`),
// Fail(400, `{"code":21610,...}`), Fail(503, "<html>...</html>"). Answers
// are used once each, in order, before authentication and validation. A
// body starting with "{" is sent as application/json, any other as
// text/html.
func (s *Server) Fail(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = append(s.fails, answer{status, body})
}

func (s *Server) nextFail() (answer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fails) == 0 {
		return answer{}, false
	}
	a := s.fails[0]
	s.fails = s.fails[1:]
	return a, true
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	sm := messagesPath.FindStringSubmatch(r.URL.Path)
	if sm == nil {
		writeError(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
		return
	}
	if a, ok := s.nextFail(); ok {
		ct := "text/html; charset=utf-8"
		if strings.HasPrefix(strings.TrimSpace(a.body), "{") {
			ct = "application/json; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(a.status)
		fmt.Fprint(w, a.body)
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.accountSID || pass == "" || sm[1] != s.accountSID {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Could not parse the request body")
		return
	}
	m := Message{
		AccountSID:          s.accountSID,
		From:                r.PostForm.Get("From"),
		To:                  r.PostForm.Get("To"),
		Body:                r.PostForm.Get("Body"),
		MessagingServiceSID: r.PostForm.Get("MessagingServiceSid"),
		StatusCallback:      r.PostForm.Get("StatusCallback"),
	}
	switch {
	case m.To == "":
		writeError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case m.From == "" && m.MessagingServiceSID == "":
		writeError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
		return
	case m.Body == "":
		writeError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case utf8.RuneCountInString(m.Body) > maxText:
		writeError(w, http.StatusBadRequest, 21617, "The concatenated message body exceeds the 1600 character limit.")
		return
	}
	m.SID = newSID()

	// Twilio answers "accepted" and 0 segments for sends through a
	// Messaging Service, which picks the sender later (PROTOCOLS §1.8).
	status, segments := "queued", segmentCount(m.Body)
	if m.MessagingServiceSID != "" {
		status, segments = "accepted", 0
	}
	resp := messageJSON{
		SID:                 m.SID,
		AccountSID:          m.AccountSID,
		To:                  m.To,
		From:                nullable(m.From),
		Body:                m.Body,
		MessagingServiceSID: nullable(m.MessagingServiceSID),
		Status:              status,
		NumSegments:         fmt.Sprint(segments),
		NumMedia:            "0",
		Direction:           "outbound-api",
		APIVersion:          "2010-04-01",
		DateCreated:         time.Now().UTC().Format(time.RFC1123Z),
		URI:                 "/2010-04-01/Accounts/" + m.AccountSID + "/Messages/" + m.SID + ".json",
	}
	resp.DateUpdated = resp.DateCreated

	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	if !s.closed { // a request can still finish after Close
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()

	writeJSON(w, http.StatusCreated, resp)
}

// messageJSON is the part of Twilio's Message resource the stand-in fills.
type messageJSON struct {
	SID                 string  `json:"sid"`
	AccountSID          string  `json:"account_sid"`
	To                  string  `json:"to"`
	From                *string `json:"from"`
	Body                string  `json:"body"`
	MessagingServiceSID *string `json:"messaging_service_sid"`
	Status              string  `json:"status"`
	NumSegments         string  `json:"num_segments"`
	NumMedia            string  `json:"num_media"`
	Direction           string  `json:"direction"`
	APIVersion          string  `json:"api_version"`
	DateCreated         string  `json:"date_created"`
	DateUpdated         string  `json:"date_updated"`
	URI                 string  `json:"uri"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{
		"code":      code,
		"message":   msg,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
		"status":    status,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "twiliotest: encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

// newSID returns "SM" and 32 random hex digits, the shape of a Message SID.
func newSID() string {
	var b [16]byte
	rand.Read(b[:])
	return "SM" + hex.EncodeToString(b[:])
}

// segmentCount approximates Twilio's count: 160 GSM-7 characters in one
// segment or 153 per part, 70 UCS-2 code units or 67 per part. Printable
// ASCII and newlines stand in for the GSM-7 alphabet; the extension
// characters ^{}\[]~| count twice.
func segmentCount(body string) int {
	gsm, n := true, 0
	for _, r := range body {
		switch {
		case strings.ContainsRune("^{}\\[]~|", r):
			n += 2
		case r == '\n' || r == '\r' || (r >= ' ' && r <= '~' && r != '`'):
			n++
		default:
			gsm = false
		}
	}
	single, part := 160, 153
	if !gsm {
		single, part = 70, 67
		n = len(utf16.Encode([]rune(body)))
	}
	if n <= single {
		return 1
	}
	return (n + part - 1) / part
}
