package sms_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/sms"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Credentials shaped like real ones: twilio-go silently refuses
// non-alphanumeric ones (PROTOCOLS §0.3).
const (
	testSID     = "AC0123456789abcdef0123456789abcdef"
	testToken   = "0123456789abcdef0123456789abcdef"
	testService = "MG0123456789abcdef0123456789abcdef"
	practiceNum = "+15559870002"
	clientNum   = "+15551230001"
	clientText  = "Hello, can we move Tuesday?"
	callbackURL = "https://gateway.example.org/twilio/status"
)

func newSender(t *testing.T, base string, edit func(*sms.SenderConfig)) *sms.Sender {
	t.Helper()
	cfg := sms.SenderConfig{
		AccountSID:     testSID,
		AuthToken:      testToken,
		From:           practiceNum,
		StatusCallback: callbackURL,
		APIBase:        base,
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := sms.NewSender(cfg)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return s
}

func startServer(t *testing.T) *twiliotest.Server {
	t.Helper()
	srv := twiliotest.Start(testSID)
	t.Cleanup(srv.Close)
	return srv
}

func outbound() envelope.Outbound {
	return envelope.Outbound{ID: 7, Channel: envelope.SMS, Kind: envelope.KindAck, To: clientNum, Text: clientText}
}

// checkClean fails if err's text holds client content or the token.
func checkClean(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	for _, s := range []string{clientNum, strings.TrimPrefix(clientNum, "+1"), clientText, "Tuesday", testToken} {
		if strings.Contains(msg, s) {
			t.Errorf("error %q contains %q", msg, s)
		}
	}
}

func TestSendFrom(t *testing.T) {
	srv := startServer(t)
	s := newSender(t, srv.URL, nil)

	id, err := s.Send(context.Background(), outbound())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !strings.HasPrefix(string(id), "SM") || len(id) != 34 {
		t.Errorf("id = %q, want SM + 32 hex", id)
	}
	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("server got %d messages, want 1", len(got))
	}
	want := twiliotest.Message{
		SID:            string(id),
		AccountSID:     testSID,
		From:           practiceNum,
		To:             clientNum,
		Body:           clientText,
		StatusCallback: callbackURL,
	}
	if got[0] != want {
		t.Errorf("sent %+v, want %+v", got[0], want)
	}
}

func TestSendMessagingService(t *testing.T) {
	srv := startServer(t)
	s := newSender(t, srv.URL, func(c *sms.SenderConfig) {
		c.MessagingServiceSID = testService // used instead of From
		c.StatusCallback = ""
	})

	id, err := s.Send(context.Background(), outbound())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("server got %d messages, want 1", len(got))
	}
	want := twiliotest.Message{
		SID:                 string(id),
		AccountSID:          testSID,
		To:                  clientNum,
		Body:                clientText,
		MessagingServiceSID: testService,
	}
	if got[0] != want {
		t.Errorf("sent %+v, want %+v", got[0], want)
	}
}

func TestSendRetryAfter429(t *testing.T) {
	srv := startServer(t)
	s := newSender(t, srv.URL, nil)
	srv.Fail(429, `{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}`)

	_, err := s.Send(context.Background(), outbound())
	if err == nil {
		t.Fatal("first Send: no error, want a transient one")
	}
	if envelope.IsPermanent(err) {
		t.Fatalf("first Send: %v is permanent, want transient", err)
	}
	checkClean(t, err)

	id, err := s.Send(context.Background(), outbound())
	if err != nil {
		t.Fatalf("second Send: %v", err)
	}
	got := srv.Messages()
	if len(got) != 1 || got[0].SID != string(id) {
		t.Fatalf("server got %+v, want one message %s", got, id)
	}
}

func TestSendPermanent(t *testing.T) {
	tests := []struct {
		status int
		code   string
		body   string
	}{
		{400, "21610", `{"code":21610,"message":"Attempt to send to unsubscribed recipient","more_info":"https://www.twilio.com/docs/errors/21610","status":400}`},
		// Twilio's own message quotes the number; ours must not.
		{400, "21211", `{"code":21211,"message":"The 'To' number +15551230001 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}`},
		{400, "21617", `{"code":21617,"message":"The concatenated message body exceeds the 1600 character limit. Body: Hello, can we move Tuesday?","status":400}`},
		{401, "20003", `{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}`},
		{404, "20404", `{"code":20404,"message":"The requested resource was not found","status":404}`},
		{400, "21999", `{"code":21999,"message":"Something new about +15551230001","status":400}`},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			srv := startServer(t)
			s := newSender(t, srv.URL, nil)
			srv.Fail(tt.status, tt.body)

			_, err := s.Send(context.Background(), outbound())
			if !envelope.IsPermanent(err) {
				t.Fatalf("Send: %v, want permanent", err)
			}
			var pe *envelope.PermanentError
			errors.As(err, &pe)
			if pe.Code != tt.code {
				t.Errorf("code = %q, want %q", pe.Code, tt.code)
			}
			checkClean(t, err)
		})
	}
}

func TestSendTransient(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{"429", 429, `{"code":20429,"message":"Too Many Requests","status":429}`},
		{"500 json", 500, `{"code":20500,"message":"Internal Server Error","status":500}`},
		{"503 html", 503, "<html><body><h1>503 Service Unavailable</h1></body></html>"},
		{"502 empty", 502, ""},
		{"404 html from a proxy", 404, "<html>not found</html>"},
		{"201 not json", 201, "<html>ok</html>"},
		{"201 without sid", 201, `{"status":"queued"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t)
			s := newSender(t, srv.URL, nil)
			srv.Fail(tt.status, tt.body)

			_, err := s.Send(context.Background(), outbound())
			if err == nil {
				t.Fatal("Send: no error, want a transient one")
			}
			if envelope.IsPermanent(err) {
				t.Fatalf("Send: %v is permanent, want transient", err)
			}
			if tt.status != 201 && !strings.Contains(err.Error(), fmt.Sprint(tt.status)) {
				t.Errorf("error %q does not name status %d", err, tt.status)
			}
			checkClean(t, err)
		})
	}
}

func TestSendWrongAccount(t *testing.T) {
	srv := twiliotest.Start("AC" + strings.Repeat("f", 32))
	t.Cleanup(srv.Close)
	s := newSender(t, srv.URL, nil)

	_, err := s.Send(context.Background(), outbound())
	var pe *envelope.PermanentError
	if !errors.As(err, &pe) || pe.Code != "20003" {
		t.Fatalf("Send: %v, want permanent 20003", err)
	}
	checkClean(t, err)
}

func TestSendRejectsBadMessage(t *testing.T) {
	tests := []struct {
		name string
		edit func(*envelope.Outbound)
	}{
		{"email channel", func(m *envelope.Outbound) { m.Channel = envelope.Email }},
		{"not e164", func(m *envelope.Outbound) { m.To = "5551230001" }},
		{"email address", func(m *envelope.Outbound) { m.To = "client@example.org" }},
		{"empty text", func(m *envelope.Outbound) { m.Text = "" }},
	}
	srv := startServer(t)
	s := newSender(t, srv.URL, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := outbound()
			tt.edit(&m)
			_, err := s.Send(context.Background(), m)
			if !envelope.IsPermanent(err) {
				t.Fatalf("Send: %v, want permanent", err)
			}
			checkClean(t, err)
		})
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server got %d messages, want 0", n)
	}
}

func TestNewSender(t *testing.T) {
	tests := []struct {
		name string
		edit func(*sms.SenderConfig)
		ok   bool
	}{
		{"valid", func(c *sms.SenderConfig) {}, true},
		{"service only", func(c *sms.SenderConfig) { c.From = ""; c.MessagingServiceSID = testService }, true},
		{"real twilio", func(c *sms.SenderConfig) { c.APIBase = "" }, true},
		{"localhost base", func(c *sms.SenderConfig) { c.APIBase = "http://localhost:4010" }, true},
		{"ipv6 loopback base", func(c *sms.SenderConfig) { c.APIBase = "https://[::1]:4010/" }, true},
		{"short sid", func(c *sms.SenderConfig) { c.AccountSID = "ACtest" }, false},
		{"api key sid", func(c *sms.SenderConfig) { c.AccountSID = "SK0123456789abcdef0123456789abcdef" }, false},
		{"non-hex token", func(c *sms.SenderConfig) { c.AuthToken = "test_auth_token_0123456789abcdef" }, false},
		{"empty token", func(c *sms.SenderConfig) { c.AuthToken = "" }, false},
		{"no sender", func(c *sms.SenderConfig) { c.From = "" }, false},
		{"from not e164", func(c *sms.SenderConfig) { c.From = "555-987-0002" }, false},
		{"bad service sid", func(c *sms.SenderConfig) { c.MessagingServiceSID = "MG123" }, false},
		{"relative callback", func(c *sms.SenderConfig) { c.StatusCallback = "/twilio/status" }, false},
		{"remote base", func(c *sms.SenderConfig) { c.APIBase = "http://api.example.org" }, false},
		{"remote ip base", func(c *sms.SenderConfig) { c.APIBase = "http://10.0.0.1:4010" }, false},
		{"base with path", func(c *sms.SenderConfig) { c.APIBase = "http://127.0.0.1:4010/2010-04-01" }, false},
		{"ftp base", func(c *sms.SenderConfig) { c.APIBase = "ftp://127.0.0.1" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := sms.SenderConfig{
				AccountSID:     testSID,
				AuthToken:      testToken,
				From:           practiceNum,
				StatusCallback: callbackURL,
				APIBase:        "http://127.0.0.1:4010",
			}
			tt.edit(&cfg)
			_, err := sms.NewSender(cfg)
			if got := err == nil; got != tt.ok {
				t.Fatalf("NewSender: err = %v, want ok %v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), testToken) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
}

// hangingServer answers nothing until the client gives up.
func hangingServer(t *testing.T) (url string, arrived <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case ch <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.URL, ch
}

func TestSendContextCanceled(t *testing.T) {
	base, arrived := hangingServer(t)
	s := newSender(t, base, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Send(ctx, outbound())
		errc <- err
	}()
	<-arrived
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Send: %v, want context.Canceled", err)
		}
		if envelope.IsPermanent(err) {
			t.Errorf("Send: %v is permanent, want transient", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send did not return after cancel")
	}
}

func TestSendAlreadyCanceled(t *testing.T) {
	srv := startServer(t)
	s := newSender(t, srv.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	_, err := s.Send(ctx, outbound())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Send: %v, want context.Canceled", err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server got %d messages, want 0", n)
	}
}

func TestSendTimeout(t *testing.T) {
	base, _ := hangingServer(t)
	s := newSender(t, base, func(c *sms.SenderConfig) {
		c.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond}
	})

	start := time.Now()
	_, err := s.Send(context.Background(), outbound())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send: %v, want context.DeadlineExceeded", err)
	}
	if envelope.IsPermanent(err) {
		t.Errorf("Send: %v is permanent, want transient", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Send took %v, want about 100ms", d)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := newSender(t, "http://"+addr, nil)

	_, err = s.Send(context.Background(), outbound())
	if err == nil || envelope.IsPermanent(err) {
		t.Fatalf("Send: %v, want a transient error", err)
	}
	checkClean(t, err)
}

type countingTransport struct {
	mu sync.Mutex
	n  int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func TestSendConcurrent(t *testing.T) {
	srv := startServer(t)
	ct := &countingTransport{}
	s := newSender(t, srv.URL, func(c *sms.SenderConfig) {
		c.HTTPClient = &http.Client{Transport: ct}
	})

	const n = 8
	ids := make(chan envelope.ProviderID, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.Send(context.Background(), outbound())
			if err != nil {
				t.Errorf("Send: %v", err)
			}
			ids <- id
		}()
	}
	wg.Wait()
	close(ids)

	seen := map[envelope.ProviderID]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct ids, want %d", len(seen), n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := srv.Wait(ctx, n)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	for _, m := range msgs {
		if !seen[envelope.ProviderID(m.SID)] {
			t.Errorf("server message %s was not returned by Send", m.SID)
		}
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.n != n {
		t.Errorf("configured transport used %d times, want %d", ct.n, n)
	}
}
