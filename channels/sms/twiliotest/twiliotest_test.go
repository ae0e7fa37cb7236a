package twiliotest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const testSID = "AC0123456789abcdef0123456789abcdef"

func post(t *testing.T, s *Server, user string, form url.Values) (int, map[string]any) {
	t.Helper()
	status, v, err := postErr(s, user, form)
	if err != nil {
		t.Fatal(err)
	}
	return status, v
}

func postErr(s *Server, user string, form url.Values) (int, map[string]any, error) {
	req, err := http.NewRequest("POST", s.URL+"/2010-04-01/Accounts/"+testSID+"/Messages.json", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(user, "0123456789abcdef0123456789abcdef")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var v map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		err = json.NewDecoder(resp.Body).Decode(&v)
	}
	return resp.StatusCode, v, err
}

func TestServer(t *testing.T) {
	s := Start(testSID)
	defer s.Close()
	ok := url.Values{"To": {"+15551230001"}, "From": {"+15559870002"}, "Body": {"hi"}}

	tests := []struct {
		name   string
		user   string
		form   url.Values
		status int
		code   float64
	}{
		{"wrong account", "AC" + strings.Repeat("f", 32), ok, 401, 20003},
		{"no to", testSID, url.Values{"From": {"+15559870002"}, "Body": {"hi"}}, 400, 21604},
		{"no from", testSID, url.Values{"To": {"+15551230001"}, "Body": {"hi"}}, 400, 21603},
		{"no body", testSID, url.Values{"To": {"+15551230001"}, "From": {"+15559870002"}}, 400, 21602},
		{"too long", testSID, url.Values{"To": {"+15551230001"}, "From": {"+15559870002"}, "Body": {strings.Repeat("a", 1601)}}, 400, 21617},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, v := post(t, s, tt.user, tt.form)
			if status != tt.status || v["code"] != tt.code {
				t.Errorf("got %d %v, want %d code %v", status, v, tt.status, tt.code)
			}
		})
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages accepted, want 0", n)
	}

	status, v := post(t, s, testSID, ok)
	if status != 201 {
		t.Fatalf("status %d, want 201", status)
	}
	sid, _ := v["sid"].(string)
	if len(sid) != 34 || !strings.HasPrefix(sid, "SM") || v["status"] != "queued" || v["num_segments"] != "1" || v["to"] != "+15551230001" {
		t.Errorf("answer %v", v)
	}
	got := s.Messages()
	want := Message{SID: sid, AccountSID: testSID, From: "+15559870002", To: "+15551230001", Body: "hi"}
	if len(got) != 1 || got[0] != want {
		t.Errorf("Messages() = %+v, want [%+v]", got, want)
	}
}

func TestFailOrder(t *testing.T) {
	s := Start(testSID)
	defer s.Close()
	s.Fail(429, `{"code":20429,"status":429}`)
	s.Fail(503, "<html>down</html>")
	form := url.Values{"To": {"+15551230001"}, "MessagingServiceSid": {"MG0123456789abcdef0123456789abcdef"}, "Body": {"hi"}}

	for _, want := range []int{429, 503, 201} {
		status, _ := post(t, s, testSID, form)
		if status != want {
			t.Errorf("status %d, want %d", status, want)
		}
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages accepted, want 1", n)
	}
}

func TestWait(t *testing.T) {
	s := Start(testSID)
	defer s.Close()
	go postErr(s, testSID, url.Values{"To": {"+15551230001"}, "From": {"+15559870002"}, "Body": {"hi"}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := s.Wait(ctx, 1)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Wait(1) = %d messages, %v", len(msgs), err)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := s.Wait(short, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait(2) err = %v, want DeadlineExceeded", err)
	}
}

func TestSegmentCount(t *testing.T) {
	tests := []struct {
		body string
		want int
	}{
		{strings.Repeat("a", 160), 1},
		{strings.Repeat("a", 161), 2},
		{strings.Repeat("a", 306), 2},
		{strings.Repeat("a", 307), 3},
		{strings.Repeat("é", 70), 1},
		{strings.Repeat("a", 70) + "’", 2},
		{strings.Repeat("[", 80), 1},
		{strings.Repeat("[", 81), 2},
	}
	for _, tt := range tests {
		if got := segmentCount(tt.body); got != tt.want {
			t.Errorf("segmentCount(%d runes of %q) = %d, want %d", len([]rune(tt.body)), tt.body[:1], got, tt.want)
		}
	}
}
