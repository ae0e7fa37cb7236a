package sms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/sms"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

const (
	recPractice2 = "+15559870003" // a second practice number
	recClient2   = "+15551230004"
	recText2     = "Running late, sorry"
	recText3     = "Also, is Thursday free?"
)

// recSID is a Message SID made from n.
func recSID(n int) string { return fmt.Sprintf("SM%032x", n) }

// recHandler is a fake store: it dedupes on ProviderID like the real one
// and can be told to fail or panic on a SID.
type recHandler struct {
	mu      sync.Mutex
	calls   []envelope.ProviderID
	stored  map[envelope.ProviderID]envelope.Inbound
	order   []envelope.ProviderID // first store of each
	failOn  envelope.ProviderID
	panicOn envelope.ProviderID
}

var errRecDiskFull = errors.New("store: insert message: disk full")

func (h *recHandler) HandleInbound(_ context.Context, in envelope.Inbound) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, in.ProviderID)
	if in.ProviderID == h.panicOn {
		h.panicOn = ""
		panic("recHandler: " + in.Text)
	}
	if in.ProviderID == h.failOn {
		return errRecDiskFull
	}
	if h.stored == nil {
		h.stored = make(map[envelope.ProviderID]envelope.Inbound)
	}
	if _, ok := h.stored[in.ProviderID]; !ok {
		h.stored[in.ProviderID] = in
		h.order = append(h.order, in.ProviderID)
	}
	return nil
}

func (h *recHandler) snapshot() (calls, order []envelope.ProviderID, stored map[envelope.ProviderID]envelope.Inbound) {
	h.mu.Lock()
	defer h.mu.Unlock()
	stored = make(map[envelope.ProviderID]envelope.Inbound, len(h.stored))
	for k, v := range h.stored {
		stored[k] = v
	}
	return slices.Clone(h.calls), slices.Clone(h.order), stored
}

func (h *recHandler) setFailOn(sid string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failOn = envelope.ProviderID(sid)
}

// recCheckpoints is an in-memory sms.Checkpoints.
type recCheckpoints struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *recCheckpoints) Checkpoint(_ context.Context, name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name], nil
}

func (c *recCheckpoints) SetCheckpoint(_ context.Context, name, value string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]string)
	}
	c.m[name] = value
	return nil
}

func (c *recCheckpoints) get(number string) string {
	v, _ := c.Checkpoint(context.Background(), sms.CheckpointPrefix+number)
	return v
}

func (c *recCheckpoints) set(number string, t time.Time) {
	c.SetCheckpoint(context.Background(), sms.CheckpointPrefix+number, t.UTC().Format(time.RFC3339))
}

// recLogs collects log output from concurrent writers.
type recLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *recLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *recLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// recSecrets are the fixture values that must never reach a log or an
// error: numbers in several spellings, message texts, the token.
var recSecrets = []string{
	practiceNum, strings.TrimPrefix(practiceNum, "+"), strings.TrimPrefix(practiceNum, "+1"),
	recPractice2, strings.TrimPrefix(recPractice2, "+1"),
	clientNum, strings.TrimPrefix(clientNum, "+1"),
	recClient2, strings.TrimPrefix(recClient2, "+1"),
	clientText, "Tuesday", recText2, recText3, "Thursday", testToken,
}

func recCheckClean(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range recSecrets {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains %q:\n%s", what, secret, s)
		}
	}
}

type recEnv struct {
	srv  *twiliotest.Server
	h    *recHandler
	cp   *recCheckpoints
	logs *recLogs
	now  time.Time // whole seconds, UTC
}

// newRecEnv starts a stand-in Twilio and returns fresh fakes. At cleanup
// it checks that the logs hold no fixture content.
func newRecEnv(t *testing.T) *recEnv {
	t.Helper()
	e := &recEnv{
		srv:  startServer(t),
		h:    &recHandler{},
		cp:   &recCheckpoints{},
		logs: &recLogs{},
		now:  time.Now().UTC().Truncate(time.Second),
	}
	t.Cleanup(func() { recCheckClean(t, "logs", e.logs.String()) })
	return e
}

func (e *recEnv) reconciler(t *testing.T, edit func(*sms.ReconcilerConfig)) *sms.Reconciler {
	t.Helper()
	cfg := sms.ReconcilerConfig{
		AccountSID: testSID,
		AuthToken:  testToken,
		Numbers:    []string{practiceNum},
		APIBase:    e.srv.URL,
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := sms.NewReconciler(cfg, e.h, e.cp)
	if err != nil {
		t.Fatalf("NewReconciler: %v", err)
	}
	return r
}

// inbound seeds a message from a client to the practice number.
func (e *recEnv) inbound(n int, from, to, body string, ago time.Duration) string {
	sid := recSID(n)
	e.srv.AddInbound(twiliotest.Message{SID: sid, From: from, To: to, Body: body}, e.now.Add(-ago))
	return sid
}

func once(t *testing.T, r *sms.Reconciler) int {
	t.Helper()
	n, err := r.Once(context.Background())
	if err != nil {
		t.Fatalf("Once: %v", err)
	}
	return n
}

func ids(sids ...string) []envelope.ProviderID {
	out := make([]envelope.ProviderID, len(sids))
	for i, s := range sids {
		out[i] = envelope.ProviderID(s)
	}
	return out
}

func TestReconcileIngestsMissedMessages(t *testing.T) {
	e := newRecEnv(t)
	// Arrived while the webhook was down.
	s1 := e.inbound(1, clientNum, practiceNum, clientText, 3*time.Hour)
	mms := "MM" + recSID(2)[2:]
	e.srv.AddInbound(twiliotest.Message{SID: mms, From: recClient2, To: practiceNum, Body: recText2, NumMedia: 2}, e.now.Add(-150*time.Minute))
	s3 := e.inbound(3, clientNum, practiceNum, recText3, time.Hour)
	// Not ours to hand on: sent by the practice, to another number, too old.
	e.srv.AddInbound(twiliotest.Message{SID: recSID(4), From: practiceNum, To: practiceNum, Body: "forwarded page", Direction: "outbound-api"}, e.now.Add(-2*time.Hour))
	e.inbound(5, clientNum, "+15559870009", "other practice", 2*time.Hour)
	e.inbound(6, clientNum, practiceNum, "day before", 25*time.Hour)
	r := e.reconciler(t, nil)

	if n := once(t, r); n != 3 {
		t.Errorf("Once handed %d, want 3", n)
	}
	calls, order, stored := e.h.snapshot()
	if want := ids(s1, mms, s3); !slices.Equal(order, want) || !slices.Equal(calls, want) {
		t.Errorf("handled %v (stored %v), want %v, oldest first", calls, order, want)
	}
	got := stored[envelope.ProviderID(s1)]
	if got.Channel != envelope.SMS || got.From != clientNum || got.To != practiceNum || got.Text != clientText ||
		!got.ReceivedAt.Equal(e.now.Add(-3*time.Hour)) || got.Notes != nil {
		t.Errorf("inbound = %+v", got)
	}
	if got := stored[envelope.ProviderID(mms)].Notes; !slices.Equal(got, []string{"2 media attachments; see the Twilio console"}) {
		t.Errorf("mms notes = %q", got)
	}
	if got, want := e.cp.get(practiceNum), e.now.Add(-time.Hour).Format(time.RFC3339); got != want {
		t.Errorf("checkpoint = %q, want %q (newest date_sent)", got, want)
	}

	qs := e.srv.ListQueries()
	if len(qs) != 1 {
		t.Fatalf("%d list requests, want 1", len(qs))
	}
	if got := qs[0].Get("To"); got != practiceNum {
		t.Errorf("To = %q", got)
	}
	if got := qs[0].Get("PageSize"); got != "1000" {
		t.Errorf("PageSize = %q, want 1000", got)
	}
	since, err := time.Parse(time.RFC3339, qs[0].Get("DateSent>"))
	if err != nil {
		t.Fatalf("DateSent> %q: %v", qs[0].Get("DateSent>"), err)
	}
	if d := e.now.Add(-24 * time.Hour).Sub(since); d < 0 || d > 10*time.Second {
		t.Errorf("first run lists from %v, want about 24h before %v", since, e.now)
	}
}

func TestReconcileSecondPassDedupes(t *testing.T) {
	e := newRecEnv(t)
	s1 := e.inbound(1, clientNum, practiceNum, clientText, 3*time.Hour)
	s2 := e.inbound(2, recClient2, practiceNum, recText2, 2*time.Hour)
	s3 := e.inbound(3, clientNum, practiceNum, recText3, time.Hour)
	r := e.reconciler(t, func(c *sms.ReconcilerConfig) { c.Overlap = 24 * time.Hour })

	if n := once(t, r); n != 3 {
		t.Fatalf("first Once handed %d, want 3", n)
	}
	s4 := e.inbound(4, clientNum, practiceNum, "one more", 5*time.Minute)
	// The overlap lists the first three again; the handler keeps one of each.
	if n := once(t, r); n != 4 {
		t.Errorf("second Once handed %d, want 4", n)
	}
	calls, order, _ := e.h.snapshot()
	if want := ids(s1, s2, s3, s4); !slices.Equal(order, want) {
		t.Errorf("stored %v, want %v", order, want)
	}
	if len(calls) != 7 {
		t.Errorf("handler called %d times, want 7", len(calls))
	}
	if got, want := e.cp.get(practiceNum), e.now.Add(-5*time.Minute).Format(time.RFC3339); got != want {
		t.Errorf("checkpoint = %q, want %q", got, want)
	}
	qs := e.srv.ListQueries()
	if got, want := qs[len(qs)-1].Get("DateSent>"), e.now.Add(-25*time.Hour).Format(time.RFC3339); got != want {
		t.Errorf("second pass lists from %q, want checkpoint - overlap %q", got, want)
	}
}

func TestReconcileCheckpointOnlyMovesForward(t *testing.T) {
	e := newRecEnv(t)
	cp := e.now.Add(-30 * time.Minute)
	e.cp.set(practiceNum, cp)
	s1 := e.inbound(1, clientNum, practiceNum, clientText, 45*time.Minute) // inside the default 1h overlap
	e.inbound(2, clientNum, practiceNum, recText2, 2*time.Hour)            // before it
	r := e.reconciler(t, nil)

	if n := once(t, r); n != 1 {
		t.Errorf("Once handed %d, want 1", n)
	}
	if _, order, _ := e.h.snapshot(); !slices.Equal(order, ids(s1)) {
		t.Errorf("stored %v, want [%s]", order, s1)
	}
	if got := e.srv.ListQueries()[0].Get("DateSent>"); got != cp.Add(-time.Hour).Format(time.RFC3339) {
		t.Errorf("listed from %q, want an hour before the checkpoint", got)
	}
	if got := e.cp.get(practiceNum); got != cp.Format(time.RFC3339) {
		t.Errorf("checkpoint = %q, want it kept at %q", got, cp.Format(time.RFC3339))
	}
}

func TestReconcileHandlerErrorKeepsCheckpoint(t *testing.T) {
	e := newRecEnv(t)
	before := e.now.Add(-6 * time.Hour)
	e.cp.set(practiceNum, before)
	s1 := e.inbound(1, clientNum, practiceNum, clientText, 3*time.Hour)
	s2 := e.inbound(2, recClient2, practiceNum, recText2, 2*time.Hour)
	s3 := e.inbound(3, clientNum, practiceNum, recText3, time.Hour)
	s4 := e.inbound(4, clientNum, recPractice2, "to the other line", 90*time.Minute)
	e.h.setFailOn(s2)
	r := e.reconciler(t, func(c *sms.ReconcilerConfig) { c.Numbers = []string{practiceNum, recPractice2} })

	n, err := r.Once(context.Background())
	if !errors.Is(err, errRecDiskFull) {
		t.Fatalf("Once error = %v, want the handler's", err)
	}
	recCheckClean(t, "error", err.Error())
	if n != 2 {
		t.Errorf("Once handed %d, want 2 (one before the failure, one on the other number)", n)
	}
	calls, _, _ := e.h.snapshot()
	if want := ids(s1, s2, s4); !slices.Equal(calls, want) {
		t.Errorf("handler saw %v, want %v: the failure stops that number's pass only", calls, want)
	}
	if got := e.cp.get(practiceNum); got != before.Format(time.RFC3339) {
		t.Errorf("checkpoint after a handler error = %q, want it kept at %q", got, before.Format(time.RFC3339))
	}
	if got, want := e.cp.get(recPractice2), e.now.Add(-90*time.Minute).Format(time.RFC3339); got != want {
		t.Errorf("other number's checkpoint = %q, want %q", got, want)
	}
	if !strings.Contains(e.logs.String(), s2) {
		t.Errorf("logs do not name the failing SID %s:\n%s", s2, e.logs)
	}

	// Once the store recovers, the next pass catches up.
	e.h.setFailOn("")
	if n := once(t, r); n != 4 {
		t.Errorf("next Once handed %d, want 4", n)
	}
	if _, order, _ := e.h.snapshot(); !slices.Equal(order, ids(s1, s4, s2, s3)) {
		t.Errorf("stored %v", order)
	}
	if got, want := e.cp.get(practiceNum), e.now.Add(-time.Hour).Format(time.RFC3339); got != want {
		t.Errorf("checkpoint = %q, want %q", got, want)
	}
}

func TestReconcileListFailure(t *testing.T) {
	e := newRecEnv(t)
	e.inbound(1, clientNum, practiceNum, clientText, time.Hour)
	r := e.reconciler(t, nil)
	e.srv.FailList(500, `{"code":20500,"message":"Internal Server Error for `+practiceNum+`","status":500}`)
	e.srv.FailList(503, "<html>503 Service Unavailable</html>")
	e.srv.FailList(401, `{"code":20003,"message":"Authenticate","status":401}`)

	for _, want := range []string{"twilio status 500 code 20500", "http status 503", "code 20003: twilio authentication failed"} {
		n, err := r.Once(context.Background())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Once error = %v, want it to contain %q", err, want)
			continue
		}
		recCheckClean(t, "error", err.Error())
		if n != 0 {
			t.Errorf("Once handed %d, want 0", n)
		}
		if got := e.cp.get(practiceNum); got != "" {
			t.Errorf("checkpoint = %q after a failed listing, want none", got)
		}
	}
	if n := once(t, r); n != 1 {
		t.Errorf("Once handed %d after recovery, want 1", n)
	}
}

func TestReconcileLimit(t *testing.T) {
	e := newRecEnv(t)
	e.inbound(1, clientNum, practiceNum, clientText, 3*time.Hour)
	s2 := e.inbound(2, recClient2, practiceNum, recText2, 2*time.Hour)
	s3 := e.inbound(3, clientNum, practiceNum, recText3, time.Hour)
	r := e.reconciler(t, func(c *sms.ReconcilerConfig) { c.Limit = 2 })

	// Twilio lists newest first, so the limit keeps the newest two.
	if n := once(t, r); n != 2 {
		t.Errorf("Once handed %d, want 2", n)
	}
	if _, order, _ := e.h.snapshot(); !slices.Equal(order, ids(s2, s3)) {
		t.Errorf("stored %v, want %v", order, ids(s2, s3))
	}
	if got := e.srv.ListQueries()[0].Get("PageSize"); got != "2" {
		t.Errorf("PageSize = %q, want 2", got)
	}
	if !strings.Contains(e.logs.String(), "hit the limit") {
		t.Errorf("no log about the limit:\n%s", e.logs)
	}
}

func TestReconcilePages(t *testing.T) {
	e := newRecEnv(t)
	const total = 1500 // two pages of at most 1000
	for i := range total {
		e.srv.AddInbound(twiliotest.Message{SID: recSID(i + 1), From: clientNum, To: practiceNum, Body: clientText},
			e.now.Add(-time.Duration(total-i)*time.Second))
	}
	r := e.reconciler(t, nil)

	if n := once(t, r); n != total {
		t.Errorf("Once handed %d, want %d", n, total)
	}
	if _, order, _ := e.h.snapshot(); len(order) != total || order[0] != envelope.ProviderID(recSID(1)) || order[total-1] != envelope.ProviderID(recSID(total)) {
		t.Errorf("stored %d, first %v, want %d oldest first", len(order), order[:1], total)
	}
	qs := e.srv.ListQueries()
	if len(qs) != 2 || qs[1].Get("PageToken") == "" {
		t.Errorf("list requests %v, want 2 pages, the second with a PageToken", qs)
	}
	if strings.Contains(e.logs.String(), "hit the limit") {
		t.Errorf("limit logged for %d messages", total)
	}
}

func TestReconcileBadCheckpoint(t *testing.T) {
	e := newRecEnv(t)
	e.cp.SetCheckpoint(context.Background(), sms.CheckpointPrefix+practiceNum, "yesterday-ish")
	e.inbound(1, clientNum, practiceNum, clientText, time.Hour)
	r := e.reconciler(t, nil)

	if n := once(t, r); n != 1 {
		t.Errorf("Once handed %d, want 1", n)
	}
	if got, want := e.cp.get(practiceNum), e.now.Add(-time.Hour).Format(time.RFC3339); got != want {
		t.Errorf("checkpoint = %q, want %q", got, want)
	}
	if !strings.Contains(e.logs.String(), "unreadable checkpoint") {
		t.Errorf("no warning about the checkpoint:\n%s", e.logs)
	}
}

func TestReconcileRun(t *testing.T) {
	e := newRecEnv(t)
	s1 := e.inbound(1, clientNum, practiceNum, clientText, time.Hour)
	e.h.panicOn = envelope.ProviderID(s1) // the first pass panics; Run carries on
	r := e.reconciler(t, func(c *sms.ReconcilerConfig) { c.Every = 10 * time.Millisecond })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	deadline := time.Now().Add(5 * time.Second)
	for len(e.srv.ListQueries()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d passes in 5s, want 3", len(e.srv.ListQueries()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	passes := len(e.srv.ListQueries())
	time.Sleep(30 * time.Millisecond)
	if got := len(e.srv.ListQueries()); got != passes {
		t.Errorf("%d passes after Run returned", got-passes)
	}
	if _, order, _ := e.h.snapshot(); !slices.Equal(order, ids(s1)) {
		t.Errorf("stored %v, want [%s]", order, s1)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "panicked") {
		t.Errorf("no log of the panic:\n%s", logs)
	}
}

func TestReconcileRunStartsAtOnce(t *testing.T) {
	e := newRecEnv(t)
	e.inbound(1, clientNum, practiceNum, clientText, time.Hour)
	r := e.reconciler(t, func(c *sms.ReconcilerConfig) { c.Every = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.cp.get(practiceNum) == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if e.cp.get(practiceNum) == "" {
		t.Error("Run did not reconcile at start")
	}
}

func TestReconcileLogs(t *testing.T) {
	// A full exchange with the fixture numbers and texts, success and
	// failures; newRecEnv's cleanup checks they stay out of the logs.
	e := newRecEnv(t)
	e.inbound(1, clientNum, practiceNum, clientText, 2*time.Hour)
	s2 := e.inbound(2, recClient2, practiceNum, recText2, time.Hour)
	r := e.reconciler(t, func(c *sms.ReconcilerConfig) { c.Numbers = []string{practiceNum, recPractice2}; c.Limit = 2 })
	e.h.setFailOn(s2)
	if _, err := r.Once(context.Background()); err == nil {
		t.Fatal("Once: no error from a failing handler")
	}
	e.h.setFailOn("")
	e.srv.FailList(400, `{"code":21211,"message":"The 'To' number `+practiceNum+` is not a valid phone number.","status":400}`)
	r.Once(context.Background())
	once(t, r)

	logs := e.logs.String()
	for _, want := range []string{s2, sms.CheckpointPrefix + "#1", sms.CheckpointPrefix + "#2", "code 21211"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestNewReconcilerErrors(t *testing.T) {
	ok := sms.ReconcilerConfig{AccountSID: testSID, AuthToken: testToken, Numbers: []string{practiceNum}}
	tests := []struct {
		name string
		edit func(*sms.ReconcilerConfig)
		want string
	}{
		{"bad sid", func(c *sms.ReconcilerConfig) { c.AccountSID = "ACtest" }, "account sid"},
		{"bad token", func(c *sms.ReconcilerConfig) { c.AuthToken = "test-token" }, "auth token"},
		{"no numbers", func(c *sms.ReconcilerConfig) { c.Numbers = nil }, "no practice numbers"},
		{"bad number", func(c *sms.ReconcilerConfig) { c.Numbers = []string{"5559870002"} }, "number #1 must be E.164"},
		{"twice", func(c *sms.ReconcilerConfig) { c.Numbers = []string{practiceNum, practiceNum} }, "number #2 is listed twice"},
		{"remote base", func(c *sms.ReconcilerConfig) { c.APIBase = "http://api.example.com" }, "loopback"},
		{"negative", func(c *sms.ReconcilerConfig) { c.Overlap = -time.Hour }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			_, err := sms.NewReconciler(cfg, &recHandler{}, &recCheckpoints{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewReconciler error = %v, want %q", err, tt.want)
			}
			recCheckClean(t, "error", err.Error())
		})
	}
	if _, err := sms.NewReconciler(ok, nil, &recCheckpoints{}); err == nil {
		t.Error("NewReconciler accepted a nil handler")
	}
	if _, err := sms.NewReconciler(ok, &recHandler{}, &recCheckpoints{}); err != nil {
		t.Errorf("NewReconciler(valid) = %v", err)
	}
}
