// Package twiliotest is a small in-process stand-in for Twilio's Messages
// API, for tests and the demo command: POST
// /2010-04-01/Accounts/{AccountSid}/Messages.json sends a message, GET on
// the same path lists messages (those sent and those seeded with
// AddInbound). It listens on 127.0.0.1 and records what it accepts.
package twiliotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
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

// Message is one message the server accepted, or one seeded with
// AddInbound.
type Message struct {
	SID                 string
	AccountSID          string
	From                string
	To                  string
	Body                string
	MessagingServiceSID string
	StatusCallback      string

	// Direction and NumMedia only matter for messages seeded with
	// AddInbound, where Direction defaults to "inbound". Messages sent
	// through the API leave them zero in Messages and are listed as
	// "outbound-api" with no media.
	Direction string
	NumMedia  int
}

// listed is a message as the list endpoint shows it.
type listed struct {
	m    Message
	sent time.Time // date_sent
}

// maxPageSize is Twilio's largest PageSize; 50 is its default.
const (
	maxPageSize     = 1000
	defaultPageSize = 50
)

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
	listed  []listed     // everything the list endpoint can show
	queries []url.Values // list requests, in order
	fails   []answer
	lfails  []answer      // scripted answers for list requests
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
	return s.popAnswer(&s.fails)
}

func (s *Server) popAnswer(q *[]answer) (answer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(*q) == 0 {
		return answer{}, false
	}
	a := (*q)[0]
	*q = (*q)[1:]
	return a, true
}

// FailList is Fail for list requests (GET on the Messages endpoint).
func (s *Server) FailList(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lfails = append(s.lfails, answer{status, body})
}

// AddInbound seeds a message the list endpoint shows with date_sent sent,
// as if Twilio had received it (and its webhook had been lost). An empty
// SID gets a fresh "SM…" ("MM…" with media) one, an empty AccountSID the
// server's, an empty Direction "inbound"; set Direction to
// "outbound-api" to seed a message the practice sent. Seeded messages
// are not in Messages and do not wake Wait.
func (s *Server) AddInbound(m Message, sent time.Time) {
	if m.SID == "" {
		m.SID = newSID()
		if m.NumMedia > 0 {
			m.SID = "MM" + m.SID[2:]
		}
	}
	if m.AccountSID == "" {
		m.AccountSID = s.accountSID
	}
	if m.Direction == "" {
		m.Direction = "inbound"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listed = append(s.listed, listed{m, sent.UTC().Truncate(time.Second)})
}

// ListQueries returns the query parameters of each list request, in
// order ("To", "DateSent>", "PageSize", "Page", "PageToken", ...).
func (s *Server) ListQueries() []url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]url.Values, len(s.queries))
	for i, q := range s.queries {
		out[i] = maps.Clone(q)
	}
	return out
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	sm := messagesPath.FindStringSubmatch(r.URL.Path)
	if sm == nil {
		writeError(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	if r.Method == http.MethodGet {
		s.serveList(w, r, sm[1])
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
		return
	}
	if a, ok := s.nextFail(); ok {
		writeAnswer(w, a)
		return
	}
	if !s.authorized(w, r, sm[1]) {
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
	now := time.Now().UTC().Truncate(time.Second)
	resp := listedJSON(listed{m, now})
	resp.Status, resp.NumSegments, resp.DateSent = status, fmt.Sprint(segments), nil // not sent yet

	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.listed = append(s.listed, listed{m, now})
	if !s.closed { // a request can still finish after Close
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()

	writeJSON(w, http.StatusCreated, resp)
}

func writeAnswer(w http.ResponseWriter, a answer) {
	ct := "text/html; charset=utf-8"
	if strings.HasPrefix(strings.TrimSpace(a.body), "{") {
		ct = "application/json; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(a.status)
	fmt.Fprint(w, a.body)
}

// authorized checks Basic auth and the account in the path, answering 401
// when they are wrong.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, pathSID string) bool {
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.accountSID || pass == "" || pathSID != s.accountSID {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return false
	}
	return true
}

// serveList answers GET Messages.json like Twilio: filtered by To, From
// and date_sent ("DateSent", "DateSent>" on or after, "DateSent<" on or
// before; RFC 3339 or YYYY-MM-DD in GMT), newest first, paged by PageSize,
// Page and PageToken with next_page_uri linking the pages.
func (s *Server) serveList(w http.ResponseWriter, r *http.Request, pathSID string) {
	q := r.URL.Query()
	s.mu.Lock()
	s.queries = append(s.queries, maps.Clone(q))
	s.mu.Unlock()
	if a, ok := s.popAnswer(&s.lfails); ok {
		writeAnswer(w, a)
		return
	}
	if !s.authorized(w, r, pathSID) {
		return
	}

	pageSize, page := defaultPageSize, 0
	if v := q.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			writeError(w, http.StatusBadRequest, 20001, "Invalid PageSize")
			return
		}
		pageSize = n
	}
	if v := q.Get("Page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, 20001, "Invalid Page")
			return
		}
		page = n
	}
	var filters []func(listed) bool
	for _, key := range []string{"DateSent", "DateSent>", "DateSent<"} {
		v := q.Get(key)
		if v == "" {
			continue
		}
		from, to, ok := dateRange(v)
		if !ok {
			writeError(w, http.StatusBadRequest, 20001, "Invalid "+key)
			return
		}
		switch key {
		case "DateSent":
			filters = append(filters, func(l listed) bool { return !l.sent.Before(from) && l.sent.Before(to) })
		case "DateSent>":
			filters = append(filters, func(l listed) bool { return !l.sent.Before(from) })
		case "DateSent<":
			filters = append(filters, func(l listed) bool { return l.sent.Before(to) })
		}
	}
	if v := q.Get("To"); v != "" {
		filters = append(filters, func(l listed) bool { return l.m.To == v })
	}
	if v := q.Get("From"); v != "" {
		filters = append(filters, func(l listed) bool { return l.m.From == v })
	}

	s.mu.Lock()
	var all []listed
	for _, l := range s.listed {
		if !slices.ContainsFunc(filters, func(f func(listed) bool) bool { return !f(l) }) {
			all = append(all, l)
		}
	}
	s.mu.Unlock()
	// Newest first, as Twilio lists them.
	slices.SortStableFunc(all, func(a, b listed) int {
		if c := b.sent.Compare(a.sent); c != 0 {
			return c
		}
		return strings.Compare(b.m.SID, a.m.SID)
	})

	// A PageToken ("PA" + the last SID of the previous page) wins over
	// Page, so a page boundary holds while messages are added.
	start := page * pageSize
	if tok := q.Get("PageToken"); strings.HasPrefix(tok, "PA") {
		if i := slices.IndexFunc(all, func(l listed) bool { return l.m.SID == tok[2:] }); i >= 0 {
			start = i + 1
		}
	}
	start = min(start, len(all))
	end := min(start+pageSize, len(all))

	base := "/2010-04-01/Accounts/" + s.accountSID + "/Messages.json"
	pageURI := func(p int, token string) string {
		v := url.Values{}
		for _, k := range []string{"To", "From", "DateSent", "DateSent>", "DateSent<"} {
			if q.Has(k) {
				v.Set(k, q.Get(k))
			}
		}
		v.Set("PageSize", strconv.Itoa(pageSize))
		v.Set("Page", strconv.Itoa(p))
		if token != "" {
			v.Set("PageToken", token)
		}
		return base + "?" + v.Encode()
	}
	resp := listJSON{
		FirstPageURI: pageURI(0, ""),
		URI:          pageURI(page, q.Get("PageToken")),
		Page:         page,
		PageSize:     pageSize,
		Start:        start,
		End:          max(end-1, start),
		Messages:     []messageJSON{},
	}
	if page > 0 {
		resp.PreviousPageURI = nullable(pageURI(page-1, ""))
	}
	if end < len(all) {
		resp.NextPageURI = nullable(pageURI(page+1, "PA"+all[end-1].m.SID))
	}
	for _, l := range all[start:end] {
		resp.Messages = append(resp.Messages, listedJSON(l))
	}
	writeJSON(w, http.StatusOK, resp)
}

// dateRange parses a DateSent filter value: an RFC 3339 time is the
// instant [t, t+1s), a YYYY-MM-DD date the whole GMT day.
func dateRange(v string) (from, to time.Time, ok bool) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		t = t.UTC().Truncate(time.Second)
		return t, t.Add(time.Second), true
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, t.AddDate(0, 0, 1), true
	}
	return time.Time{}, time.Time{}, false
}

func listedJSON(l listed) messageJSON {
	m := l.m
	status, dir := "received", m.Direction
	if dir == "" {
		status, dir = "sent", "outbound-api"
	} else if dir != "inbound" {
		status = "sent"
	}
	date := l.sent.Format(time.RFC1123Z)
	return messageJSON{
		SID:                 m.SID,
		AccountSID:          m.AccountSID,
		To:                  m.To,
		From:                nullable(m.From),
		Body:                m.Body,
		MessagingServiceSID: nullable(m.MessagingServiceSID),
		Status:              status,
		NumSegments:         fmt.Sprint(segmentCount(m.Body)),
		NumMedia:            strconv.Itoa(m.NumMedia),
		Direction:           dir,
		APIVersion:          "2010-04-01",
		DateCreated:         date,
		DateUpdated:         date,
		DateSent:            &date,
		URI:                 "/2010-04-01/Accounts/" + m.AccountSID + "/Messages/" + m.SID + ".json",
	}
}

// listJSON is Twilio's list page.
type listJSON struct {
	FirstPageURI    string        `json:"first_page_uri"`
	NextPageURI     *string       `json:"next_page_uri"`
	PreviousPageURI *string       `json:"previous_page_uri"`
	URI             string        `json:"uri"`
	Page            int           `json:"page"`
	PageSize        int           `json:"page_size"`
	Start           int           `json:"start"`
	End             int           `json:"end"`
	Messages        []messageJSON `json:"messages"`
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
	DateSent            *string `json:"date_sent"`
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
