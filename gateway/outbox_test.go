package gateway

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// runOutbox runs o until the test ends.
func runOutbox(t *testing.T, o *Outbox) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { o.Run(ctx) })
	stop = sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	return stop
}

func newOutbox(s *Store, senders map[envelope.Channel]envelope.Sender) *Outbox {
	return &Outbox{Store: s, Senders: senders, BaseDelay: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond,
		MaxAttempts: 4, Logger: slog.New(slog.DiscardHandler)}
}

func outboxState(t *testing.T, s *Store, id int64) (state string, attempts int, code, pid string) {
	t.Helper()
	err := s.db.QueryRow(`SELECT state, attempts, error_code, provider_id FROM outbox WHERE id = ?`, id).
		Scan(&state, &attempts, &code, &pid)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func queue(t *testing.T, s *Store, r outRow) int64 {
	t.Helper()
	var id int64
	err := s.tx(context.Background(), func(tx *sql.Tx, now time.Time) error {
		var err error
		id, err = insertOutbox(context.Background(), tx, now, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var ackRow = outRow{kind: envelope.KindAck, channel: envelope.SMS, to: "+15550100001", body: "thanks"}

func TestOutboxTransientThenSuccess(t *testing.T) {
	s := mustOpenStore(t)
	f := &fakeSender{fn: func(call int, _ envelope.Outbound) error {
		if call < 3 {
			return errors.New("503 from provider")
		}
		return nil
	}}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	id := queue(t, s, ackRow)
	runOutbox(t, o)
	waitFor(t, "sent", func() bool { st, _, _, _ := outboxState(t, s, id); return st == "sent" })
	_, attempts, _, pid := outboxState(t, s, id)
	if attempts != 3 || pid == "" {
		t.Fatalf("attempts %d provider id %q; want 3 and an id", attempts, pid)
	}
}

func TestOutboxPermanentFailureRecorded(t *testing.T) {
	s := mustOpenStore(t)
	f := &fakeSender{fn: func(int, envelope.Outbound) error { return envelope.Permanent("21211", "invalid number") }}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	id := queue(t, s, ackRow)
	runOutbox(t, o)
	waitFor(t, "failed", func() bool { st, _, _, _ := outboxState(t, s, id); return st == "failed" })
	_, attempts, code, _ := outboxState(t, s, id)
	if attempts != 1 || code != "21211" {
		t.Fatalf("attempts %d code %q; want 1 and 21211", attempts, code)
	}
	time.Sleep(30 * time.Millisecond)
	if f.calls != 1 {
		t.Fatalf("permanent failure retried: %d calls", f.calls)
	}
}

func TestOutboxGivesUpAfterMaxAttempts(t *testing.T) {
	s := mustOpenStore(t)
	f := &fakeSender{fn: func(int, envelope.Outbound) error { return errors.New("timeout") }}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	id := queue(t, s, ackRow)
	runOutbox(t, o)
	waitFor(t, "failed", func() bool { st, _, _, _ := outboxState(t, s, id); return st == "failed" })
	_, attempts, code, _ := outboxState(t, s, id)
	if attempts != o.MaxAttempts || code != "gave-up" {
		t.Fatalf("attempts %d code %q; want %d and gave-up", attempts, code, o.MaxAttempts)
	}
}

func TestOutboxResumesAfterRestart(t *testing.T) {
	s := mustOpenStore(t)
	c := &clock{t: time.Now()}
	s.Now = c.Now
	// A row claimed by a process that died mid-send: leased, not recorded.
	id := queue(t, s, ackRow)
	o := newOutbox(s, nil)
	jobs, _, err := o.claim(context.Background(), 1)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %d", err, len(jobs))
	}
	// A new worker leaves it alone while the lease runs...
	f := &fakeSender{}
	o2 := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	if jobs, _, _ := o2.claim(context.Background(), 5); len(jobs) != 0 {
		t.Fatal("claimed a leased row")
	}
	// ...and sends it once the lease has run out.
	c.Advance(lease + time.Second)
	runOutbox(t, o2)
	waitFor(t, "sent", func() bool { st, _, _, _ := outboxState(t, s, id); return st == "sent" })
	if _, attempts, _, _ := outboxState(t, s, id); attempts != 2 {
		t.Fatalf("attempts %d, want 2", attempts)
	}
}

func TestOutboxNeverSendsTwice(t *testing.T) {
	s := mustOpenStore(t)
	f := &fakeSender{}
	senders := map[envelope.Channel]envelope.Sender{envelope.SMS: f}
	for range 20 {
		queue(t, s, ackRow)
	}
	stop := runOutbox(t, newOutbox(s, senders))
	waitFor(t, "all sent", func() bool { return len(f.Sent()) == 20 })
	stop()
	// A restarted worker, and a second one beside it, find nothing to do.
	runOutbox(t, newOutbox(s, senders))
	runOutbox(t, newOutbox(s, senders))
	time.Sleep(50 * time.Millisecond)
	if n := len(f.Sent()); n != 20 {
		t.Fatalf("%d sends for 20 rows", n)
	}
	seen := map[int64]bool{}
	for _, m := range f.Sent() {
		if seen[m.ID] {
			t.Fatalf("row %d sent twice", m.ID)
		}
		seen[m.ID] = true
	}
}

func TestOutboxBoundsConcurrency(t *testing.T) {
	s := mustOpenStore(t)
	f := &fakeSender{delay: 10 * time.Millisecond}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	o.Concurrency = 3
	for range 15 {
		queue(t, s, ackRow)
	}
	runOutbox(t, o)
	waitFor(t, "all sent", func() bool { return len(f.Sent()) == 15 })
	if f.maxIn > 3 || f.maxIn < 2 {
		t.Fatalf("max in flight %d, want 2..3", f.maxIn)
	}
}

func TestOutboxWakesOnKick(t *testing.T) {
	s := mustOpenStore(t)
	f := &fakeSender{}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	runOutbox(t, o)
	time.Sleep(20 * time.Millisecond) // the worker is now idle, waiting minutes
	queue(t, s, ackRow)
	o.Kick()
	waitFor(t, "sent after kick", func() bool { return len(f.Sent()) == 1 })
}

func TestOutboxRefusesOptedOut(t *testing.T) {
	s := mustOpenStore(t)
	s.db.Exec(`INSERT INTO opt_outs VALUES ('sms', '+15550100001', '2026-01-01 00:00:00.000000')`)
	f := &fakeSender{}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	id := queue(t, s, ackRow)
	runOutbox(t, o)
	waitFor(t, "failed", func() bool { st, _, _, _ := outboxState(t, s, id); return st == "failed" })
	if _, _, code, _ := outboxState(t, s, id); code != "opted-out" || f.calls != 0 {
		t.Fatalf("code %q calls %d; want opted-out and no send", code, f.calls)
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	for attempt, hi := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 20: time.Minute} {
		for range 50 {
			d := backoff(attempt, time.Second, time.Minute)
			if d < hi/10 || d > hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, hi/10, hi)
			}
		}
	}
}
