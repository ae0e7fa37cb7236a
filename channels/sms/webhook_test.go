package sms_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/twilio/twilio-go/client"

	"github.com/therapistinbox/gateway/channels/sms"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// PROTOCOLS §1.4 "Our SMS vector".
const (
	whToken    = "test_auth_token_0123456789abcdef"
	whAccount  = "AC00000000000000000000000000000000"
	whPublic   = "https://gateway.example.org"
	whSMSURL   = "https://gateway.example.org/twilio/sms"
	whStatus   = "https://gateway.example.org/twilio/status"
	whSMSBody  = "AccountSid=AC00000000000000000000000000000000&Body=Hello%2C+can+we+move+Tuesday%3F&From=%2B15551230001&MessageSid=SM00000000000000000000000000000001&NumMedia=0&To=%2B15559870002"
	whSMSSig   = "+hV9jHA6cWB4b+2QDMEZRgNJU3Q="
	whSMSSid   = "SM00000000000000000000000000000001"
	whFrom     = "+15551230001"
	whTo       = "+15559870002"
	whText     = "Hello, can we move Tuesday?"
	emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response></Response>`
)

// Twilio's documented example (PROTOCOLS §1.4).
const (
	docToken = "12345"
	docURL   = "https://mycompany.com/myapp.php?foo=1&bar=2"
	docBody  = "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212"
	docSig   = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
)

// whHMAC is PROTOCOLS §1.2 written out by hand: the URL without its
// fragment, then name+value for each parameter in byte order of the names
// (first value each), HMAC-SHA1 with the auth token, base64.
func whHMAC(token, rawURL string, form url.Values) string {
	s := rawURL
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s += k + form[k][0]
	}
	m := hmac.New(sha1.New, []byte(token))
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// whSign signs a form-encoded body as Twilio would for the URL configured
// in Twilio; the fragment (connection overrides) is never signed.
func whSign(t *testing.T, token, configured, body string) string {
	t.Helper()
	form, err := url.ParseQuery(body)
	if err != nil {
		t.Fatalf("parse body: %v", err)
	}
	u, _, _ := strings.Cut(configured, "#")
	return whHMAC(token, u, form)
}

// TestSignHelper checks the hand-written signer against the published
// vectors and against twilio-go's validator.
func TestSignHelper(t *testing.T) {
	tests := []struct {
		name, token, url, body, sig string
	}{
		{"our sms vector", whToken, whSMSURL, whSMSBody, whSMSSig},
		{"twilio doc vector", docToken, docURL, docBody, docSig},
		{"fragment is not signed", whToken, whSMSURL + "#rc=3&rp=all", whSMSBody, whSMSSig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := whSign(t, tt.token, tt.url, tt.body); got != tt.sig {
				t.Fatalf("whSign = %q, want %q", got, tt.sig)
			}
			rv := client.NewRequestValidator(tt.token)
			u, _, _ := strings.Cut(tt.url, "#")
			if !rv.ValidateBody(u, []byte(tt.body), tt.sig) {
				t.Fatalf("twilio-go ValidateBody rejects %q", tt.sig)
			}
		})
	}
	// Signing the fragment too gives another HMAC (PROTOCOLS §1.4).
	form, _ := url.ParseQuery(whSMSBody)
	if got := whHMAC(whToken, whSMSURL+"#rc=3&rp=all", form); got == whSMSSig || !strings.HasPrefix(got, "U57FGEmk") {
		t.Fatalf("HMAC with fragment = %q, want U57FGEmk…", got)
	}
}

// fakeInbound records what the webhook hands on, and fails when told to.
type fakeInbound struct {
	mu    sync.Mutex
	got   []envelope.Inbound
	bySid map[envelope.ProviderID]int
	err   error
}

func (f *fakeInbound) HandleInbound(ctx context.Context, in envelope.Inbound) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bySid == nil {
		f.bySid = make(map[envelope.ProviderID]int)
	}
	f.bySid[in.ProviderID]++
	if f.err != nil {
		return f.err
	}
	f.got = append(f.got, in)
	return nil
}

func (f *fakeInbound) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.bySid {
		n += c
	}
	return n
}

func (f *fakeInbound) last(t *testing.T) envelope.Inbound {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) == 0 {
		t.Fatal("handler got no message")
	}
	return f.got[len(f.got)-1]
}

type fakeStatus struct {
	mu  sync.Mutex
	got []envelope.Status
	err error
}

func (f *fakeStatus) HandleStatus(ctx context.Context, s envelope.Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, s)
	return f.err
}

func (f *fakeStatus) all() []envelope.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]envelope.Status(nil), f.got...)
}

// lockedBuffer collects log output written from server goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines decodes the JSON log lines.
func (b *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

type whFixture struct {
	w    *sms.Webhook
	in   *fakeInbound
	st   *fakeStatus
	logs *lockedBuffer
}

// newWebhook builds a Webhook for our SMS vector's token, account and
// public URL; edit may change the config first.
func newWebhook(t *testing.T, edit func(*sms.WebhookConfig)) whFixture {
	t.Helper()
	f := whFixture{in: &fakeInbound{}, st: &fakeStatus{}, logs: &lockedBuffer{}}
	cfg := sms.WebhookConfig{
		AuthToken:  whToken,
		AccountSID: whAccount,
		PublicURL:  whPublic,
		Logger:     slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	w, err := sms.NewWebhook(cfg, f.in, f.st)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	f.w = w
	return f
}

// post sends a form to h in process; target is the path and query the
// request arrives with. sig "" sends no signature header.
func post(h http.Handler, target, body, sig string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sig != "" {
		r.Header.Set("X-Twilio-Signature", sig)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func checkTwiML(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	if got := rec.Header().Get("Content-Type"); got != "text/xml" {
		t.Fatalf("Content-Type = %q, want text/xml", got)
	}
	if got := rec.Body.String(); got != emptyTwiML {
		t.Fatalf("body = %q, want %q", got, emptyTwiML)
	}
}

func TestInboundSMSVector(t *testing.T) {
	f := newWebhook(t, nil)
	rec := post(f.w.Inbound(), "/twilio/sms", whSMSBody, whSMSSig)
	checkTwiML(t, rec)
	want := envelope.Inbound{
		Channel:    envelope.SMS,
		ProviderID: whSMSSid,
		From:       whFrom,
		To:         whTo,
		Text:       whText,
	}
	if got := f.in.last(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("handler got %+v, want %+v", got, want)
	}
}

// TestInboundDocVector runs Twilio's documented example through the
// handler, on a path with a query string. It has no AccountSid or
// MessageSid, so it is refused, but for the account, after the signature
// was accepted; with a wrong signature it is refused for that.
func TestInboundDocVector(t *testing.T) {
	tests := []struct {
		name    string
		sig     string
		outcome string
	}{
		{"signature accepted", docSig, "wrong account"},
		{"signature rejected", "vOEb5UThFn24KEfnOFLQY2AE5FY=", "bad signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newWebhook(t, func(c *sms.WebhookConfig) {
				c.AuthToken = docToken
				c.PublicURL = "https://mycompany.com"
			})
			rec := post(f.w.Inbound(), "/myapp.php?foo=1&bar=2", docBody, tt.sig)
			if rec.Code != http.StatusForbidden {
				t.Fatalf("status = %d, want 403", rec.Code)
			}
			if n := f.in.calls(); n != 0 {
				t.Fatalf("handler called %d times, want 0", n)
			}
			lines := f.logs.lines(t)
			if len(lines) != 1 {
				t.Fatalf("got %d log lines, want 1: %s", len(lines), f.logs)
			}
			if got := lines[0]["outcome"]; got != tt.outcome {
				t.Fatalf("outcome = %v, want %q", got, tt.outcome)
			}
		})
	}
}

func TestInboundChecks(t *testing.T) {
	reordered := "To=%2B15559870002&NumMedia=0&MessageSid=SM00000000000000000000000000000001&From=%2B15551230001&Body=Hello%2C+can+we+move+Tuesday%3F&AccountSid=AC00000000000000000000000000000000"
	pooled := readFixture(t, "inbound_pooled_stop.form")
	otherAccount := strings.Replace(whSMSBody, whAccount, "AC11111111111111111111111111111111", 1)
	noSid := "AccountSid=" + whAccount + "&Body=hi&From=%2B15551230001&To=%2B15559870002"
	noFrom := "AccountSid=" + whAccount + "&Body=hi&MessageSid=" + whSMSSid + "&To=%2B15559870002"
	tampered := strings.Replace(whSMSBody, "Tuesday", "Friday", 1)
	big := whSMSBody + "&Extra=" + strings.Repeat("x", 300)

	tests := []struct {
		name   string
		edit   func(*sms.WebhookConfig)
		method string
		target string
		body   string
		sig    string // literal X-Twilio-Signature; "" for none
		code   int
		calls  int
	}{
		{name: "sms vector", body: whSMSBody, sig: whSMSSig, code: 200, calls: 1},
		{name: "reordered params", body: reordered, sig: whSMSSig, code: 200, calls: 1},
		{name: "signed by our helper", body: whSMSBody, sig: whSign(t, whToken, whSMSURL, whSMSBody), code: 200, calls: 1},
		{name: "fragment in twilio's url", body: whSMSBody, sig: whSign(t, whToken, whSMSURL+"#rc=3&rp=all", whSMSBody), code: 200, calls: 1},
		{name: "fragment in public url", edit: func(c *sms.WebhookConfig) { c.PublicURL = whPublic + "#rc=3&rp=all" }, body: whSMSBody, sig: whSMSSig, code: 200, calls: 1},
		{name: "explicit port 443", edit: func(c *sms.WebhookConfig) { c.PublicURL = "https://gateway.example.org:443" }, body: whSMSBody, sig: whSMSSig, code: 200, calls: 1},
		{name: "trailing slash in public url", edit: func(c *sms.WebhookConfig) { c.PublicURL = whPublic + "/" }, body: whSMSBody, sig: whSMSSig, code: 200, calls: 1},
		{name: "path prefix in public url", edit: func(c *sms.WebhookConfig) { c.PublicURL = "https://gateway.example.org/twilio" }, target: "/sms", body: whSMSBody, sig: whSMSSig, code: 200, calls: 1},
		{name: "pooled number", body: pooled, sig: whSign(t, whToken, whSMSURL, pooled), code: 200, calls: 1},
		{name: "query string", target: "/twilio/sms?practice=1&x=a%2Fb", body: whSMSBody, sig: whSign(t, whToken, whSMSURL+"?practice=1&x=a%2Fb", whSMSBody), code: 200, calls: 1},
		{name: "query string not signed", target: "/twilio/sms?practice=1", body: whSMSBody, sig: whSMSSig, code: 403},
		{name: "wrong token", body: whSMSBody, sig: whSign(t, "0123456789abcdef0123456789abcdef", whSMSURL, whSMSBody), code: 403},
		{name: "public url http, twilio https", edit: func(c *sms.WebhookConfig) { c.PublicURL = "http://gateway.example.org" }, body: whSMSBody, sig: whSMSSig, code: 403},
		{name: "other host", edit: func(c *sms.WebhookConfig) { c.PublicURL = "https://gw.example.org" }, body: whSMSBody, sig: whSMSSig, code: 403},
		{name: "other path", target: "/twilio/sms2", body: whSMSBody, sig: whSMSSig, code: 403},
		{name: "missing signature", body: whSMSBody, code: 403},
		{name: "tampered body", body: tampered, sig: whSMSSig, code: 403},
		{name: "param dropped", body: strings.Replace(whSMSBody, "&NumMedia=0", "", 1), sig: whSMSSig, code: 403},
		{name: "param added", body: whSMSBody + "&FromCity=X", sig: whSMSSig, code: 403},
		{name: "other account", body: otherAccount, sig: whSign(t, whToken, whSMSURL, otherAccount), code: 403},
		{name: "missing MessageSid", body: noSid, sig: whSign(t, whToken, whSMSURL, noSid), code: 400},
		{name: "missing From", body: noFrom, sig: whSign(t, whToken, whSMSURL, noFrom), code: 400},
		{name: "malformed form", body: "%zz", sig: whSMSSig, code: 400},
		{name: "body over MaxBody", edit: func(c *sms.WebhookConfig) { c.MaxBody = 256 }, body: big, sig: whSign(t, whToken, whSMSURL, big), code: 413},
		{name: "body at MaxBody", edit: func(c *sms.WebhookConfig) { c.MaxBody = int64(len(whSMSBody)) }, body: whSMSBody, sig: whSMSSig, code: 200, calls: 1},
		{name: "GET", method: http.MethodGet, body: "", sig: whSMSSig, code: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newWebhook(t, tt.edit)
			target := tt.target
			if target == "" {
				target = "/twilio/sms"
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, target, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.sig != "" {
				r.Header.Set("X-Twilio-Signature", tt.sig)
			}
			rec := httptest.NewRecorder()
			f.w.Inbound().ServeHTTP(rec, r)
			if rec.Code != tt.code {
				t.Fatalf("status = %d, want %d (log: %s)", rec.Code, tt.code, f.logs)
			}
			if n := f.in.calls(); n != tt.calls {
				t.Fatalf("handler called %d times, want %d", n, tt.calls)
			}
			switch {
			case tt.code == 200:
				checkTwiML(t, rec)
			case rec.Body.Len() != 0:
				t.Fatalf("%d answer has a body: %q", tt.code, rec.Body)
			}
			if tt.code == 405 {
				if got := rec.Header().Get("Allow"); got != "POST" {
					t.Fatalf("Allow = %q, want POST", got)
				}
			}
		})
	}
}

// TestInboundPooled: a number in a Messaging Service pool posts its own To,
// which is handed on as it is, with Twilio's opt-out signal.
func TestInboundPooled(t *testing.T) {
	f := newWebhook(t, nil)
	body := readFixture(t, "inbound_pooled_stop.form")
	checkTwiML(t, post(f.w.Inbound(), "/twilio/sms", body, whSign(t, whToken, whSMSURL, body)))
	want := envelope.Inbound{
		Channel:    envelope.SMS,
		ProviderID: "SM0123456789abcdef0123456789abcd02",
		From:       whFrom,
		To:         "+15559870003",
		Text:       "STOP",
		OptOut:     "STOP",
	}
	if got := f.in.last(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("handler got %+v, want %+v", got, want)
	}
}

func TestInboundMMS(t *testing.T) {
	f := newWebhook(t, nil)
	body := readFixture(t, "inbound_mms.form")
	checkTwiML(t, post(f.w.Inbound(), "/twilio/sms", body, whSign(t, whToken, whSMSURL, body)))
	const media = "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages/MM0123456789abcdef0123456789abcdef/Media/"
	want := envelope.Inbound{
		Channel:    envelope.SMS,
		ProviderID: "MM0123456789abcdef0123456789abcdef",
		From:       whFrom,
		To:         whTo,
		Text:       "Here is the form you asked for",
		Attachments: []envelope.Attachment{
			{Name: "ME00000000000000000000000000000001", Type: "image/jpeg", URL: media + "ME00000000000000000000000000000001"},
			{Name: "ME00000000000000000000000000000002", Type: "application/pdf", URL: media + "ME00000000000000000000000000000002"},
		},
	}
	if got := f.in.last(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("handler got %+v,\nwant %+v", got, want)
	}
}

// TestInboundMediaProblems: a NumMedia Twilio's post does not back up is
// noted for the digest; the message is still stored.
func TestInboundMediaProblems(t *testing.T) {
	tests := []struct {
		name     string
		extra    string
		atts     int
		hasNotes bool
	}{
		{"NumMedia not a number", "NumMedia=two", 0, true},
		{"NumMedia above the urls", "NumMedia=3&MediaUrl0=https%3A%2F%2Fexample.org%2Fa%2FME1&MediaContentType0=image%2Fpng", 1, true},
		{"huge NumMedia", "NumMedia=1000000000", 0, true},
		{"no NumMedia", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newWebhook(t, nil)
			body := "AccountSid=" + whAccount + "&From=%2B15551230001&MessageSid=" + whSMSSid + "&To=%2B15559870002"
			if tt.extra != "" {
				body += "&" + tt.extra
			}
			checkTwiML(t, post(f.w.Inbound(), "/twilio/sms", body, whSign(t, whToken, whSMSURL, body)))
			got := f.in.last(t)
			if len(got.Attachments) != tt.atts {
				t.Fatalf("got %d attachments, want %d", len(got.Attachments), tt.atts)
			}
			if (len(got.Notes) > 0) != tt.hasNotes {
				t.Fatalf("notes = %q, want notes: %v", got.Notes, tt.hasNotes)
			}
		})
	}
}

func TestInboundHandlerError(t *testing.T) {
	f := newWebhook(t, nil)
	f.in.err = errors.New("store: insert message: database is locked")
	rec := post(f.w.Inbound(), "/twilio/sms", whSMSBody, whSMSSig)
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") == "text/plain" {
		t.Fatalf("500 answer has content %q (%q)", rec.Body, rec.Header().Get("Content-Type"))
	}
	lines := f.logs.lines(t)
	if len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["message_sid"] != whSMSSid {
		t.Fatalf("log = %s, want one ERROR line with the message sid", f.logs)
	}
}

// TestInboundDuplicate: a redelivered MessageSid is answered 200 again;
// deduping is the handler's business.
func TestInboundDuplicate(t *testing.T) {
	f := newWebhook(t, nil)
	for i := range 2 {
		r := httptest.NewRequest(http.MethodPost, "/twilio/sms", strings.NewReader(whSMSBody))
		r.Header.Set("X-Twilio-Signature", whSMSSig)
		r.Header.Set("I-Twilio-Idempotency-Token", "7c3e1e1a-0000-4000-8000-000000000001")
		rec := httptest.NewRecorder()
		f.w.Inbound().ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			t.Fatalf("delivery %d: status = %d, want 200", i+1, rec.Code)
		}
	}
	if n := f.in.bySid[whSMSSid]; n != 2 {
		t.Fatalf("handler saw %s %d times, want 2", whSMSSid, n)
	}
	for _, l := range f.logs.lines(t) {
		if l["idempotency_token"] != "7c3e1e1a-0000-4000-8000-000000000001" {
			t.Fatalf("log line %v lacks the idempotency token", l)
		}
	}
}

func TestStatus(t *testing.T) {
	delivered := readFixture(t, "status_delivered.form")
	failed := readFixture(t, "status_failed.form")
	noStatus := "AccountSid=" + whAccount + "&MessageSid=" + whSMSSid
	otherAccount := strings.Replace(delivered, whAccount, "AC11111111111111111111111111111111", 1)
	tests := []struct {
		name    string
		method  string
		body    string
		sig     string
		handErr error
		code    int
		want    []envelope.Status
	}{
		{name: "delivered", body: delivered, sig: whSign(t, whToken, whStatus, delivered), code: 204,
			want: []envelope.Status{{Channel: envelope.SMS, ProviderID: "SM00000000000000000000000000000099", State: "delivered"}}},
		{name: "failed 30003", body: failed, sig: whSign(t, whToken, whStatus, failed), code: 204,
			want: []envelope.Status{{Channel: envelope.SMS, ProviderID: "SM00000000000000000000000000000098", State: "failed", ErrorCode: "30003"}}},
		{name: "bad signature", body: failed, sig: whSign(t, whToken, whSMSURL, failed), code: 403},
		{name: "missing signature", body: failed, code: 403},
		{name: "other account", body: otherAccount, sig: whSign(t, whToken, whStatus, otherAccount), code: 403},
		{name: "missing MessageStatus", body: noStatus, sig: whSign(t, whToken, whStatus, noStatus), code: 400},
		{name: "malformed form", body: "a=%zz", sig: whSMSSig, code: 400},
		{name: "handler error", body: delivered, sig: whSign(t, whToken, whStatus, delivered), handErr: errors.New("store: busy"), code: 500,
			want: []envelope.Status{{Channel: envelope.SMS, ProviderID: "SM00000000000000000000000000000099", State: "delivered"}}},
		{name: "GET", method: http.MethodGet, code: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newWebhook(t, nil)
			f.st.err = tt.handErr
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, "/twilio/status", strings.NewReader(tt.body))
			if tt.sig != "" {
				r.Header.Set("X-Twilio-Signature", tt.sig)
			}
			rec := httptest.NewRecorder()
			f.w.Status().ServeHTTP(rec, r)
			if rec.Code != tt.code {
				t.Fatalf("status = %d, want %d (log: %s)", rec.Code, tt.code, f.logs)
			}
			if rec.Body.Len() != 0 {
				t.Fatalf("answer has a body: %q", rec.Body)
			}
			if got := f.st.all(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("status handler got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestWebhookOverHTTP runs a full exchange over real HTTP on loopback
// behind a pretend TLS proxy: the request arrives at
// http://127.0.0.1:port/twilio/sms, Twilio signed
// https://gateway.example.org/twilio/sms. It also checks that the log
// holds no number, text or signature (STYLE §6).
func TestWebhookOverHTTP(t *testing.T) {
	f := newWebhook(t, nil)
	mux := http.NewServeMux()
	mux.Handle("/twilio/sms", f.w.Inbound())
	mux.Handle("/twilio/status", f.w.Status())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("server at %s, want loopback", srv.URL)
	}

	send := func(path, body, sig string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", sig)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	resp := send("/twilio/sms", whSMSBody, whSMSSig)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/xml" || string(b) != emptyTwiML {
		t.Fatalf("inbound: %d %q %q, want 200 text/xml empty TwiML", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if got := f.in.last(t); got.From != whFrom || got.To != whTo || got.Text != whText {
		t.Fatalf("handler got %+v", got)
	}

	// A forged copy, signed for the address it arrived at, is refused.
	forged := strings.Replace(whSMSBody, "Tuesday", "Friday", 1)
	resp = send("/twilio/sms", forged, whSign(t, whToken, srv.URL+"/twilio/sms", forged))
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged: status %d, want 403", resp.StatusCode)
	}

	failed := readFixture(t, "status_failed.form")
	resp = send("/twilio/status", failed, whSign(t, whToken, whStatus, failed))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status callback: %d, want 204", resp.StatusCode)
	}
	srv.Close() // waits for the handlers, so every line is logged

	logs := f.logs.String()
	for _, secret := range []string{
		whFrom, "15551230001", "5551230001", whTo, "15559870002", "5559870002",
		whText, "move Tuesday", "Friday", whSMSSig, "Hello%2C",
	} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log holds %q:\n%s", secret, logs)
		}
	}
	lines := f.logs.lines(t)
	if len(lines) != 3 {
		t.Fatalf("got %d log lines, want 3:\n%s", len(lines), logs)
	}
	wants := []struct {
		status  float64
		outcome string
		sid     any
	}{
		{200, "stored", whSMSSid},
		{403, "bad signature", nil},
		{204, "recorded", "SM00000000000000000000000000000098"},
	}
	for i, w := range wants {
		l := lines[i]
		if l["status"] != w.status || l["outcome"] != w.outcome || l["message_sid"] != w.sid {
			t.Fatalf("log line %d = %v, want status %v outcome %q message_sid %v", i, l, w.status, w.outcome, w.sid)
		}
		if _, ok := l["duration_ms"]; !ok {
			t.Fatalf("log line %d has no duration: %v", i, l)
		}
	}
}

func TestNewWebhook(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*sms.WebhookConfig)
		nilH  bool
		nilSt bool
		ok    bool
	}{
		{name: "valid", ok: true},
		{name: "no token", edit: func(c *sms.WebhookConfig) { c.AuthToken = "" }},
		{name: "bad account", edit: func(c *sms.WebhookConfig) { c.AccountSID = "ACtest" }},
		{name: "no public url", edit: func(c *sms.WebhookConfig) { c.PublicURL = "" }},
		{name: "relative public url", edit: func(c *sms.WebhookConfig) { c.PublicURL = "/twilio" }},
		{name: "ftp public url", edit: func(c *sms.WebhookConfig) { c.PublicURL = "ftp://gateway.example.org" }},
		{name: "public url with query", edit: func(c *sms.WebhookConfig) { c.PublicURL = whPublic + "?x=1" }},
		{name: "public url with user", edit: func(c *sms.WebhookConfig) { c.PublicURL = "https://u:p@gateway.example.org" }},
		{name: "negative max body", edit: func(c *sms.WebhookConfig) { c.MaxBody = -1 }},
		{name: "no handler", nilH: true},
		{name: "no status handler", nilSt: true},
		{name: "no logger", edit: func(c *sms.WebhookConfig) { c.Logger = nil }, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := sms.WebhookConfig{AuthToken: whToken, AccountSID: whAccount, PublicURL: whPublic, Logger: slog.New(slog.DiscardHandler)}
			if tt.edit != nil {
				tt.edit(&cfg)
			}
			var h envelope.Handler = &fakeInbound{}
			var st envelope.StatusHandler = &fakeStatus{}
			if tt.nilH {
				h = nil
			}
			if tt.nilSt {
				st = nil
			}
			w, err := sms.NewWebhook(cfg, h, st)
			if (err == nil) != tt.ok {
				t.Fatalf("NewWebhook error = %v, want ok %v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), whToken) {
				t.Fatalf("error quotes the token: %v", err)
			}
			if tt.ok {
				checkTwiML(t, post(w.Inbound(), "/twilio/sms", whSMSBody, whSMSSig))
			}
		})
	}
}

// TestNewWebhookAllProblems: every problem is reported at once.
func TestNewWebhookAllProblems(t *testing.T) {
	_, err := sms.NewWebhook(sms.WebhookConfig{MaxBody: -1}, nil, nil)
	if err == nil {
		t.Fatal("NewWebhook accepted an empty config")
	}
	for _, want := range []string{"auth token", "account sid", "public url", "max body", "inbound handler", "status handler"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}
}
