package email

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/therapistinbox/gateway/channels/email/imaptest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Fixture content that must never reach the logs.
const (
	fixtureFrom    = "rowan.client@example.org"
	fixtureSubject = "Rough week, can we talk"
	fixtureBody    = "I have been struggling to sleep since Tuesday."
)

// testMsg is a client email with a stable Message-ID <n-tag@client.test>.
func testMsg(n int, tag string) []byte {
	return fmt.Appendf(nil, "From: Rowan <%s>\r\nTo: practice@example.com\r\nSubject: %s %d\r\n"+
		"Date: Mon, 2 Jun 2025 09:00:00 +0000\r\nMessage-ID: <%d-%s@client.test>\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", fixtureFrom, fixtureSubject, n, n, tag, fixtureBody)
}

// testID is the ProviderID of testMsg(n, tag).
func testID(n int, tag string) string { return fmt.Sprintf("%d-%s@client.test", n, tag) }

// providerKey is the dedupe key, as the dispatcher uses it.
func providerKey(in envelope.Inbound) string { return string(in.ProviderID) }

// dedupeHandler behaves like the dispatcher: it stores each ProviderID
// once and accepts repeats silently. It counts every call.
type dedupeHandler struct {
	mu      sync.Mutex
	calls   map[string]int
	stored  []string
	changed chan struct{} // closed and replaced on every call
	// fail, when set, may refuse a call (the call count includes it).
	fail func(key string, call int) error
}

func newHandler() *dedupeHandler {
	return &dedupeHandler{calls: map[string]int{}, changed: make(chan struct{})}
}

func (h *dedupeHandler) HandleInbound(ctx context.Context, in envelope.Inbound) error {
	key := providerKey(in)
	h.mu.Lock()
	defer h.mu.Unlock()
	defer func() { close(h.changed); h.changed = make(chan struct{}) }()
	if key == "" {
		return envelope.Permanent("", "message has no provider id")
	}
	h.calls[key]++
	if h.fail != nil {
		if err := h.fail(key, h.calls[key]); err != nil {
			return err
		}
	}
	if !slicesContains(h.stored, key) {
		h.stored = append(h.stored, key)
	}
	return nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (h *dedupeHandler) callsFor(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[key]
}

func (h *dedupeHandler) totalCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		n += c
	}
	return n
}

// waitStored waits until n distinct messages are stored and returns them.
func (h *dedupeHandler) waitStored(t testing.TB, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.After(within)
	for {
		h.mu.Lock()
		if len(h.stored) >= n {
			out := append([]string(nil), h.stored...)
			h.mu.Unlock()
			return out
		}
		ch, got := h.changed, len(h.stored)
		h.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d of %d messages handled after %v", got, n, within)
		}
	}
}

// memCheckpoints is an in-memory Checkpoints.
type memCheckpoints struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *memCheckpoints) Checkpoint(_ context.Context, name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name], nil
}

func (c *memCheckpoints) SetCheckpoint(_ context.Context, name, value string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[name] = value
	return nil
}

func (c *memCheckpoints) get(name string) string {
	v, _ := c.Checkpoint(context.Background(), name)
	return v
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fixture is a watcher wired to a Dovecot server, a deduping handler and
// in-memory checkpoints, logging to a buffer.
type fixture struct {
	srv    *imaptest.Server
	w      *Watcher
	h      *dedupeHandler
	cp     *memCheckpoints
	logs   *syncBuffer
	parses atomic.Int64
}

func plainConfig(srv *imaptest.Server) IMAPConfig {
	return IMAPConfig{Addr: srv.Addr(), Security: SecurityNone, Username: srv.User(), Password: srv.Pass(), Timeout: 5 * time.Second}
}

func newFixture(t testing.TB, srv *imaptest.Server, tweak func(*IMAPConfig)) *fixture {
	t.Helper()
	f := &fixture{srv: srv, h: newHandler(), cp: &memCheckpoints{}, logs: &syncBuffer{}}
	cfg := plainConfig(srv)
	cfg.Logger = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if tweak != nil {
		tweak(&cfg)
	}
	w, err := NewWatcher(cfg, f.h, f.cp)
	if err != nil {
		t.Fatal(err)
	}
	w.backoffMin = 20 * time.Millisecond
	w.parse = func(raw []byte, size int64, opts ParseOptions) envelope.Inbound {
		f.parses.Add(1)
		return Parse(raw, size, opts)
	}
	f.w = w
	return f
}

// run starts w.Run and stops it when the test ends; the returned func
// stops it earlier.
func (f *fixture) run(t testing.TB) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitConfirmed waits until the watcher has confirmed everything up to
// uid (flagged or moved, then checkpointed).
func (f *fixture) waitConfirmed(t testing.TB, uid int) {
	t.Helper()
	want := fmt.Sprintf("/%d", uid)
	waitFor(t, 5*time.Second, "the checkpoint", func() bool { return strings.HasSuffix(f.cp.get("imap:INBOX"), want) })
}

// waitIdle waits until the watcher has caught up and is waiting for mail.
func (f *fixture) waitIdle(t testing.TB) {
	t.Helper()
	waitFor(t, 5*time.Second, "the watcher to connect", f.w.Healthy)
}

func seenAll(t testing.TB, srv *imaptest.Server, mailbox string, n int) {
	t.Helper()
	msgs := srv.Fetch(t, mailbox)
	if len(msgs) != n {
		t.Fatalf("%s holds %d messages, want %d", mailbox, len(msgs), n)
	}
	for _, m := range msgs {
		if !m.Has(`\Seen`) {
			t.Errorf("uid %d not flagged \\Seen: %v", m.UID, m.Flags)
		}
	}
}

func TestNewWatcherValidation(t *testing.T) {
	h, cp := newHandler(), &memCheckpoints{}
	good := IMAPConfig{Addr: "127.0.0.1:143", Security: SecurityNone, Username: "u", Password: "p"}
	if _, err := NewWatcher(good, h, cp); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*IMAPConfig)
		want string // "" = accepted
	}{
		{"no port", func(c *IMAPConfig) { c.Addr = "imap.example.org" }, "imap addr"},
		{"bad security", func(c *IMAPConfig) { c.Security = "ssl" }, "imap security"},
		{"plain to remote", func(c *IMAPConfig) { c.Addr = "imap.example.org:143" }, "clear text"},
		{"plain to remote allowed", func(c *IMAPConfig) { c.Addr = "imap.example.org:143"; c.AllowPlain = true }, ""},
		{"tls to remote", func(c *IMAPConfig) { c.Addr = "imap.example.org:993"; c.Security = SecurityTLS }, ""},
		{"no password", func(c *IMAPConfig) { c.Password = "" }, "password"},
		{"move to itself", func(c *IMAPConfig) { c.MoveTo = "inbox" }, "move_to"},
		{"idle refresh too long", func(c *IMAPConfig) { c.IdleRefresh = 29 * time.Minute }, "29 minutes"},
		{"negative poll", func(c *IMAPConfig) { c.Poll = -time.Second }, "poll"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			_, err := NewWatcher(cfg, h, cp)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	// Every problem at once.
	_, err := NewWatcher(IMAPConfig{Security: "x"}, nil, nil)
	for _, want := range []string{"imap addr", "imap security", "username", "handler", "checkpoint"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to mention %q", err, want)
		}
	}
}

func TestIMAPSecurityModes(t *testing.T) {
	srv := imaptest.Start(t)
	srv.Deliver(t, "INBOX", testMsg(1, "sec"))
	trust := &tls.Config{RootCAs: srv.RootCAs()}
	tests := []struct {
		name string
		mod  func(*IMAPConfig)
		want string // error substring; "" = success
	}{
		{"tls", func(c *IMAPConfig) { c.Addr, c.Security, c.TLSConfig = srv.TLSAddr(), SecurityTLS, trust }, ""},
		{"starttls", func(c *IMAPConfig) { c.Security, c.TLSConfig = SecurityStartTLS, trust }, ""},
		{"none", func(c *IMAPConfig) {}, ""},
		{"bad password", func(c *IMAPConfig) { c.Password = "wrong" }, "login refused; check the username and password"},
		{"untrusted certificate", func(c *IMAPConfig) { c.Addr, c.Security = srv.TLSAddr(), SecurityTLS }, "certificate"},
		{"starttls untrusted", func(c *IMAPConfig) { c.Security = SecurityStartTLS }, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, srv, tt.mod)
			n, err := f.w.Once(context.Background())
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Once = %d, %v; want an error mentioning %q", n, err, tt.want)
				}
				if strings.Contains(err.Error(), srv.User()) || strings.Contains(err.Error(), srv.Pass()) {
					t.Errorf("error names the credentials: %v", err)
				}
				var ie *imap.Error
				if tt.name == "bad password" && !(errors.As(err, &ie) && ie.Code == imap.ResponseCodeAuthenticationFailed) {
					t.Errorf("want an AUTHENTICATIONFAILED *imap.Error in %v", err)
				}
				return
			}
			if err != nil || n != 1 {
				t.Fatalf("Once = %d, %v; want 1, nil", n, err)
			}
		})
	}
}

func TestIMAPIdleDelivery(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.run(t)
	f.waitIdle(t)

	start := time.Now()
	srv.Deliver(t, "INBOX", testMsg(1, "idle"))
	got := f.h.waitStored(t, 1, 5*time.Second)
	t.Logf("delivered → handled in %v", time.Since(start))
	if got[0] != testID(1, "idle") {
		t.Errorf("stored %v", got)
	}
	waitFor(t, 5*time.Second, "\\Seen", func() bool {
		m := srv.Fetch(t, "INBOX")
		return len(m) == 1 && m[0].Has(`\Seen`)
	})
	uv := srv.UIDValidity(t, "INBOX")
	waitFor(t, 5*time.Second, "the checkpoint", func() bool { return f.cp.get("imap:INBOX") == fmt.Sprintf("%d/1", uv) })
	if f.w.LastSync().IsZero() {
		t.Error("LastSync is zero")
	}

	// A second message wakes the same IDLE connection.
	srv.Deliver(t, "INBOX", testMsg(2, "idle"))
	f.h.waitStored(t, 2, 5*time.Second)
	seenAll(t, srv, "INBOX", 2)

	logs := f.logs.String()
	if strings.Count(logs, `"msg":"imap connected"`) != 1 || !strings.Contains(logs, `"idle":true`) {
		t.Errorf("want one IDLE connection in the logs:\n%s", logs)
	}
	for _, secret := range []string{fixtureFrom, "rowan", fixtureSubject, fixtureBody, "client.test", srv.Pass()} {
		if strings.Contains(strings.ToLower(logs), strings.ToLower(secret)) {
			t.Errorf("logs contain %q:\n%s", secret, logs)
		}
	}
}

func TestIMAPMoveTo(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, func(c *IMAPConfig) { c.MoveTo = "Gateway/Processed" })
	f.run(t)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(1, "move"))
	f.h.waitStored(t, 1, 5*time.Second)
	waitFor(t, 5*time.Second, "the move", func() bool {
		return len(srv.Fetch(t, "INBOX")) == 0 && len(srv.Fetch(t, "Gateway/Processed")) == 1
	})
	if m := srv.Fetch(t, "Gateway/Processed")[0]; m.MessageID != "<"+testID(1, "move")+">" {
		t.Errorf("moved %+v", m)
	}
}

// Servers without MOVE: go-imap's COPY + STORE + UID EXPUNGE; without
// UIDPLUS as well, copy and flag \Deleted but leave the expunge alone.
func TestIMAPMoveFallback(t *testing.T) {
	for _, tt := range []struct {
		without []string
		inbox   int // messages left in INBOX
	}{
		{[]string{"MOVE"}, 0},
		{[]string{"MOVE", "UIDPLUS"}, 1},
	} {
		t.Run(strings.Join(tt.without, "+"), func(t *testing.T) {
			srv := imaptest.Start(t, imaptest.WithoutCapability(tt.without...))
			srv.Deliver(t, "INBOX", testMsg(1, "fallback"))
			srv.Deliver(t, "INBOX", testMsg(2, "fallback"))
			f := newFixture(t, srv, func(c *IMAPConfig) { c.MoveTo = "Done" })
			if n, err := f.w.Once(context.Background()); n != 2 || err != nil {
				t.Fatalf("Once = %d, %v", n, err)
			}
			if got := srv.Fetch(t, "Done"); len(got) != 2 {
				t.Errorf("Done holds %+v", got)
			}
			inbox := srv.Fetch(t, "INBOX")
			if len(inbox) != tt.inbox*2 {
				t.Fatalf("INBOX holds %+v", inbox)
			}
			for _, m := range inbox {
				if !m.Has(`\Deleted`) {
					t.Errorf("uid %d left without \\Deleted: %v", m.UID, m.Flags)
				}
			}
			// A second pass finds nothing new.
			if n, err := f.w.Once(context.Background()); n != 0 || err != nil {
				t.Errorf("second Once = %d, %v", n, err)
			}
		})
	}
}

func TestIMAPReconnectAfterKick(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.run(t)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(1, "kick"))
	f.h.waitStored(t, 1, 5*time.Second)
	// Kicked between the handler and the confirmation, a message is
	// handled again (and deduped); that is not what this test is about.
	f.waitConfirmed(t, 1)

	if !srv.Kick(t) {
		t.Fatal("no connection to kick")
	}
	srv.Deliver(t, "INBOX", testMsg(2, "kick")) // while disconnected or reconnecting
	f.h.waitStored(t, 2, 10*time.Second)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(3, "kick"))
	f.h.waitStored(t, 3, 5*time.Second)
	f.waitConfirmed(t, 3)

	if !srv.Kick(t) { // and once more, right away
		t.Fatal("no connection to kick the second time")
	}
	srv.Deliver(t, "INBOX", testMsg(4, "kick"))
	got := f.h.waitStored(t, 4, 10*time.Second)

	for i := 1; i <= 4; i++ {
		if c := f.h.callsFor(testID(i, "kick")); c != 1 {
			t.Errorf("message %d handled %d times", i, c)
		}
		if got[i-1] != testID(i, "kick") {
			t.Errorf("order: %v", got)
		}
	}
	waitFor(t, 5*time.Second, "all \\Seen", func() bool {
		for _, m := range srv.Fetch(t, "INBOX") {
			if !m.Has(`\Seen`) {
				return false
			}
		}
		return true
	})
	if n := strings.Count(f.logs.String(), `"msg":"imap connected"`); n < 3 {
		t.Errorf("%d connections logged, want at least 3", n)
	}
}

// Killed in the middle of a backlog: every message is stored once; those
// handled but not yet confirmed are handed over again and deduped.
func TestIMAPKickMidBatch(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.h.fail = func(string, int) error { time.Sleep(2 * time.Millisecond); return nil } // a slower store
	f.run(t)
	f.waitIdle(t)
	const n = 150
	raws := make([][]byte, n)
	for i := range raws {
		raws[i] = testMsg(i+1, "mid")
	}
	srv.Append(t, "INBOX", raws...)
	f.h.waitStored(t, 20, 10*time.Second)
	if !srv.Kick(t) {
		t.Fatal("no connection to kick")
	}
	got := f.h.waitStored(t, n, 20*time.Second)
	for i, id := range got {
		if id != testID(i+1, "mid") {
			t.Fatalf("stored[%d] = %s", i, id)
		}
	}
	if c := f.h.totalCalls(); c < n || c > n+fetchBatch {
		t.Errorf("%d handler calls for %d messages; at most one batch may repeat", c, n)
	}
	f.waitConfirmed(t, n)
	seenAll(t, srv, "INBOX", n)
	t.Logf("%d handler calls for %d messages", f.h.totalCalls(), n)
}

func TestIMAPMailWhileStopped(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	stop := f.run(t)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(1, "down"))
	f.h.waitStored(t, 1, 5*time.Second)
	stop()

	srv.Deliver(t, "INBOX", testMsg(2, "down"))
	srv.Deliver(t, "INBOX", testMsg(3, "down"))
	n, err := f.w.Once(context.Background())
	if n != 2 || err != nil {
		t.Fatalf("Once = %d, %v; want 2", n, err)
	}
	// Nothing new: the "UID n:*" answer for the last UID is not reprocessed.
	if n, err := f.w.Once(context.Background()); n != 0 || err != nil {
		t.Fatalf("second Once = %d, %v; want 0", n, err)
	}
	for i := 1; i <= 3; i++ {
		if c := f.h.callsFor(testID(i, "down")); c != 1 {
			t.Errorf("message %d handled %d times", i, c)
		}
	}
	seenAll(t, srv, "INBOX", 3)

	// Run after a stop catches up the same way.
	srv.Deliver(t, "INBOX", testMsg(4, "down"))
	f.run(t)
	f.h.waitStored(t, 4, 5*time.Second)
	if c := f.h.totalCalls(); c != 4 {
		t.Errorf("%d handler calls, want 4", c)
	}
}

func TestIMAPUIDValidityChange(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	srv.Deliver(t, "INBOX", testMsg(1, "uv"))
	srv.Deliver(t, "INBOX", testMsg(2, "uv"))
	if n, err := f.w.Once(context.Background()); n != 2 || err != nil {
		t.Fatalf("Once = %d, %v", n, err)
	}
	uv := srv.ResetUIDValidity(t, "INBOX")
	srv.Deliver(t, "INBOX", testMsg(3, "uv"))

	parsesBefore := f.parses.Load()
	n, err := f.w.Once(context.Background())
	if n != 3 || err != nil {
		t.Fatalf("Once after the reset = %d, %v; want 3 (a rescan)", n, err)
	}
	if p := f.parses.Load() - parsesBefore; p != 3 {
		t.Errorf("Parse called %d times in the rescan, want 3", p)
	}
	// The handler saw the old messages again under the same ProviderIDs,
	// so its dedupe kept one of each.
	got := f.h.waitStored(t, 3, time.Second)
	if len(got) != 3 {
		t.Fatalf("stored %v", got)
	}
	for i, want := range []int{2, 2, 1} {
		if c := f.h.callsFor(testID(i+1, "uv")); c != want {
			t.Errorf("message %d: %d calls, want %d", i+1, c, want)
		}
	}
	if v := f.cp.get("imap:INBOX"); v != fmt.Sprintf("%d/3", uv) {
		t.Errorf("checkpoint %q, want %d/3", v, uv)
	}
	if !strings.Contains(f.logs.String(), "uidvalidity changed") {
		t.Error("the rescan was not logged")
	}
}

// A UIDVALIDITY change while Run is connected: after the next reconnect
// the watcher rescans, and nothing is stored twice.
func TestIMAPUIDValidityChangeWhileRunning(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.run(t)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(1, "uvrun"))
	f.h.waitStored(t, 1, 5*time.Second)
	uv := srv.ResetUIDValidity(t, "INBOX")
	srv.Kick(t)
	srv.Deliver(t, "INBOX", testMsg(2, "uvrun"))
	got := f.h.waitStored(t, 2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("stored %v", got)
	}
	waitFor(t, 5*time.Second, "the new checkpoint", func() bool { return f.cp.get("imap:INBOX") == fmt.Sprintf("%d/2", uv) })
	if c := f.h.callsFor(testID(2, "uvrun")); c != 1 {
		t.Errorf("new message handled %d times", c)
	}
}

func TestIMAPHandlerError(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.h.fail = func(key string, call int) error {
		if key == testID(1, "err") && call <= 2 {
			return errors.New("database is locked")
		}
		return nil
	}
	srv.Deliver(t, "INBOX", testMsg(1, "err"))
	srv.Deliver(t, "INBOX", testMsg(2, "err"))

	for i := 1; i <= 2; i++ {
		n, err := f.w.Once(context.Background())
		if n != 0 || err == nil || !strings.Contains(err.Error(), "database is locked") {
			t.Fatalf("Once #%d = %d, %v; want the handler's error", i, n, err)
		}
		for _, m := range srv.Fetch(t, "INBOX") {
			if m.Has(`\Seen`) {
				t.Fatalf("uid %d flagged \\Seen although the handler failed", m.UID)
			}
		}
		if c := f.h.callsFor(testID(2, "err")); c != 0 {
			t.Fatal("the next message was handled past a failed one")
		}
	}
	uv := srv.UIDValidity(t, "INBOX")
	if v := f.cp.get("imap:INBOX"); v != fmt.Sprintf("%d/0", uv) {
		t.Errorf("checkpoint %q moved past a failed message", v)
	}

	// Run retries on its own, with backoff.
	f.run(t)
	f.h.waitStored(t, 2, 10*time.Second)
	if c := f.h.callsFor(testID(1, "err")); c != 3 {
		t.Errorf("message 1: %d calls, want 3", c)
	}
	waitFor(t, 5*time.Second, "all \\Seen", func() bool {
		m := srv.Fetch(t, "INBOX")
		return len(m) == 2 && m[0].Has(`\Seen`) && m[1].Has(`\Seen`)
	})
}

// A message the handler can never accept (a permanent error) is left
// unread for a person and does not hold up the mail behind it.
func TestIMAPPermanentHandlerError(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.h.fail = func(key string, call int) error {
		if key == testID(1, "perm") {
			return envelope.Permanent("", "message has no sender")
		}
		return nil
	}
	srv.Deliver(t, "INBOX", testMsg(1, "perm"))
	srv.Deliver(t, "INBOX", testMsg(2, "perm"))
	if n, err := f.w.Once(context.Background()); n != 1 || err != nil {
		t.Fatalf("Once = %d, %v; want 1, nil", n, err)
	}
	msgs := srv.Fetch(t, "INBOX")
	if len(msgs) != 2 || msgs[0].Has(`\Seen`) || !msgs[1].Has(`\Seen`) {
		t.Errorf("INBOX = %+v; want the refused one unread, the next one \\Seen", msgs)
	}
	if v := f.cp.get("imap:INBOX"); !strings.HasSuffix(v, "/2") {
		t.Errorf("checkpoint %q, want past both", v)
	}
	if !strings.Contains(f.logs.String(), `"level":"ERROR","msg":"imap message refused`) {
		t.Errorf("refusal not logged as an error:\n%s", f.logs.String())
	}
}

func TestIMAPRunRetriesHandlerError(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	var failing atomic.Bool
	failing.Store(true)
	f.h.fail = func(key string, call int) error {
		if failing.Load() {
			return errors.New("disk full")
		}
		return nil
	}
	f.run(t)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(1, "retry"))
	waitFor(t, 5*time.Second, "a few failed attempts", func() bool { return f.h.callsFor(testID(1, "retry")) >= 3 })
	if m := srv.Fetch(t, "INBOX"); m[0].Has(`\Seen`) {
		t.Fatal("flagged \\Seen while the handler fails")
	}
	failing.Store(false)
	f.h.waitStored(t, 1, 10*time.Second)
	waitFor(t, 5*time.Second, "\\Seen", func() bool { return srv.Fetch(t, "INBOX")[0].Has(`\Seen`) })
	if !strings.Contains(f.logs.String(), "disk full") {
		t.Error("the failure was not logged")
	}
}

func TestIMAPPollWithoutIdle(t *testing.T) {
	srv := imaptest.Start(t, imaptest.WithoutCapability("IDLE"))
	f := newFixture(t, srv, func(c *IMAPConfig) { c.Poll = 200 * time.Millisecond })
	f.run(t)
	f.waitIdle(t)
	srv.Deliver(t, "INBOX", testMsg(1, "poll"))
	f.h.waitStored(t, 1, 5*time.Second)
	first := f.w.LastSync()
	waitFor(t, 5*time.Second, "another poll", func() bool { return f.w.LastSync().After(first) })
	if logs := f.logs.String(); !strings.Contains(logs, `"idle":false`) {
		t.Errorf("want a polling connection in the logs:\n%s", logs)
	}
	seenAll(t, srv, "INBOX", 1)
}

func TestIMAPIdleRefresh(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, func(c *IMAPConfig) { c.IdleRefresh = 200 * time.Millisecond })
	f.run(t)
	f.waitIdle(t)
	first := f.w.LastSync()
	waitFor(t, 5*time.Second, "IDLE to be re-issued", func() bool { return f.w.LastSync().After(first) })
	srv.Deliver(t, "INBOX", testMsg(1, "refresh"))
	f.h.waitStored(t, 1, 5*time.Second)
	if n := strings.Count(f.logs.String(), `"msg":"imap connected"`); n != 1 {
		t.Errorf("%d connections, want 1 (refresh keeps the connection)", n)
	}
}

func TestIMAPLargeMessageHeaderOnly(t *testing.T) {
	srv := imaptest.Start(t)
	big := append(testMsg(1, "big"), bytes.Repeat([]byte("0123456789abcdef\r\n"), 1000)...)
	srv.Deliver(t, "INBOX", big)
	srv.Deliver(t, "INBOX", testMsg(2, "big"))
	f := newFixture(t, srv, func(c *IMAPConfig) { c.Parse.MaxSize = 4000 })
	type call struct {
		raw  string
		size int64
	}
	var calls []call
	f.w.parse = func(raw []byte, size int64, opts ParseOptions) envelope.Inbound {
		calls = append(calls, call{string(raw), size})
		return Parse(raw, size, opts)
	}
	if n, err := f.w.Once(context.Background()); n != 2 || err != nil {
		t.Fatalf("Once = %d, %v", n, err)
	}
	if len(calls) != 2 {
		t.Fatalf("%d Parse calls", len(calls))
	}
	if c := calls[0]; c.size < int64(len(big)) || strings.Contains(c.raw, "0123456789") || !strings.HasSuffix(c.raw, "\r\n\r\n") {
		t.Errorf("big message: Parse got %d bytes (size %d), want the header and the full size", len(c.raw), c.size)
	}
	if c := calls[1]; c.size != 0 || !strings.Contains(c.raw, fixtureBody) {
		t.Errorf("small message: Parse got size %d, body included: %v", c.size, strings.Contains(c.raw, fixtureBody))
	}
	seenAll(t, srv, "INBOX", 2)
}

// More than one fetch batch, in UID order.
func TestIMAPBacklogOrder(t *testing.T) {
	srv := imaptest.Start(t)
	const n = 250
	raws := make([][]byte, n)
	for i := range raws {
		raws[i] = testMsg(i+1, "order")
	}
	srv.Append(t, "INBOX", raws...)
	f := newFixture(t, srv, nil)
	got, err := f.w.Once(context.Background())
	if got != n || err != nil {
		t.Fatalf("Once = %d, %v", got, err)
	}
	stored := f.h.waitStored(t, n, time.Second)
	for i, id := range stored {
		if id != testID(i+1, "order") {
			t.Fatalf("message %d is %s", i+1, id)
		}
	}
	if v := f.cp.get("imap:INBOX"); !strings.HasSuffix(v, fmt.Sprintf("/%d", n)) {
		t.Errorf("checkpoint %q", v)
	}
}

func TestIMAPCancel(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	stop := f.run(t)
	f.waitIdle(t)
	start := time.Now()
	stop()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	if f.w.Healthy() {
		t.Error("Healthy after stop")
	}
	// Once also gives up at once when its context is done.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.w.Once(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Once with a cancelled context: %v", err)
	}
}

func TestIMAPRunOnceExclusive(t *testing.T) {
	srv := imaptest.Start(t)
	f := newFixture(t, srv, nil)
	f.run(t)
	f.waitIdle(t)
	if _, err := f.w.Once(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("Once during Run: %v", err)
	}
}

func TestParseCheckpoint(t *testing.T) {
	for _, tt := range []struct {
		in  string
		uv  uint32
		uid imap.UID
		ok  bool
	}{
		{"123/45", 123, 45, true},
		{"4294967295/0", 4294967295, 0, true},
		{"", 0, 0, false},
		{"7:42", 0, 0, false},
		{"x/1", 0, 0, false},
	} {
		uv, uid, ok := parseCheckpoint(tt.in)
		if uv != tt.uv || uid != tt.uid || ok != tt.ok {
			t.Errorf("parseCheckpoint(%q) = %d, %d, %v", tt.in, uv, uid, ok)
		}
	}
}
