package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/policies"
	"github.com/therapistinbox/gateway/schedule"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)         { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var newYork = mustLoad("America/New_York")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// monday is Monday 16 November 2026, 14:00 in New York: after Monday's
// 09:00 check-in, before Wednesday's 10:00.
var monday = time.Date(2026, 11, 16, 14, 0, 0, 0, newYork)

// testGateway is a dispatcher, digester and escalator on a real SQLite
// file.
type testGateway struct {
	store *Store
	clock *clock
	d     *Dispatcher
	g     *Digester
	e     *Escalator
}

func mustOpenStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newTestGateway(t testing.TB, repeat string) *testGateway {
	t.Helper()
	s := mustOpenStore(t)
	c := &clock{t: monday}
	s.Now = c.Now
	cal, err := schedule.New(newYork, []string{"Mon 09:00", "Wed 10:00"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	triage, err := policies.NewTriage("URGENT", nil)
	if err != nil {
		t.Fatal(err)
	}
	wording, err := policies.NewWording(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := Practice{
		Name: "Rivera Counselling", Therapist: "Dr. Maria Rivera", DigestTo: "therapist@example.org",
		Location: newYork, CrisisLine: "988 (call or text)", Emergency: "911", UrgentKeyword: "URGENT",
		PhoneRegion: "US",
		OnCall:      []OnCall{{Name: "Dr. Sam Okafor", Phone: "+15550100900", Email: "oncall@example.org", After: 10 * time.Minute}},
	}
	d := &Dispatcher{Store: s, Calendar: cal, Triage: triage, Wording: wording,
		Ack: policies.AckPolicy{Repeat: repeat, BriefAfter: time.Hour}, Practice: p,
		Logger: slog.New(slog.DiscardHandler)}
	e := &Escalator{Store: s, Practice: p, Calendar: cal, Logger: slog.New(slog.DiscardHandler)}
	return &testGateway{store: s, clock: c, d: d, g: &Digester{Store: s, Practice: p}, e: e}
}

// setPractice changes the practice everywhere.
func (tg *testGateway) setPractice(change func(p *Practice)) {
	change(&tg.d.Practice)
	tg.g.Practice, tg.e.Practice = tg.d.Practice, tg.d.Practice
}

var sid int

// sms is an inbound text with a fresh provider id.
func sms(from, text string) envelope.Inbound {
	sid++
	return envelope.Inbound{Channel: envelope.SMS, ProviderID: envelope.ProviderID(fmt.Sprintf("SM%032d", sid)),
		From: from, Text: text}
}

func email(from, subject, text string) envelope.Inbound {
	sid++
	id := fmt.Sprintf("m%d@mail.example.org", sid)
	return envelope.Inbound{Channel: envelope.Email, ProviderID: envelope.ProviderID(id), MessageID: id,
		From: from, Subject: subject, Text: text}
}

func (tg *testGateway) receive(t testing.TB, in envelope.Inbound) Result {
	t.Helper()
	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = tg.clock.Now()
	}
	r, err := tg.d.Receive(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// count runs a count(*) query.
func count(t testing.TB, s *Store, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// queued is one outbox row as tests look at it.
type queued struct {
	Kind, Channel, To, Subject, Body, InReplyTo, State string
}

func outbox(t testing.TB, s *Store) []queued {
	t.Helper()
	rows, err := s.db.Query(`SELECT kind, channel, recipient, subject, body, in_reply_to, state FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []queued
	for rows.Next() {
		var q queued
		if err := rows.Scan(&q.Kind, &q.Channel, &q.To, &q.Subject, &q.Body, &q.InReplyTo, &q.State); err != nil {
			t.Fatal(err)
		}
		out = append(out, q)
	}
	return out
}

// fakeSender records sends and fails as scripted: fn decides per call.
type fakeSender struct {
	mu       sync.Mutex
	sent     []envelope.Outbound
	calls    int
	inFlight int
	maxIn    int
	fn       func(call int, m envelope.Outbound) error
	delay    time.Duration
}

func (f *fakeSender) Send(ctx context.Context, m envelope.Outbound) (envelope.ProviderID, error) {
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.fn != nil {
		if err := f.fn(call, m); err != nil {
			return "", err
		}
	}
	f.mu.Lock()
	f.sent = append(f.sent, m)
	f.mu.Unlock()
	return envelope.ProviderID(fmt.Sprintf("P%d", m.ID)), nil
}

func (f *fakeSender) Sent() []envelope.Outbound {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]envelope.Outbound(nil), f.sent...)
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// latencies collects durations from parallel benchmark goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) { l.mu.Lock(); l.d = append(l.d, d...); l.mu.Unlock() }

// p returns the q-th quantile.
func (l *latencies) p(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return l.d[min(len(l.d)-1, int(q*float64(len(l.d))))]
}
