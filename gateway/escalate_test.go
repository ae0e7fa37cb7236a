package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

var (
	wednesday10 = time.Date(2026, 11, 18, 10, 0, 0, 0, newYork)
	staffPhones = []string{therapistPhone, danaPhone, samPhone}
)

// noticePhones returns the recipients of notices after row from, and
// checks each says want.
func noticePhones(t testing.TB, s *Store, from int, want string) []string {
	t.Helper()
	var to []string
	for _, q := range notices(t, s, from) {
		if q.Channel != "sms" || !strings.Contains(q.Body, want) {
			t.Fatalf("notice %+v, want a text saying %q", q, want)
		}
		to = append(to, q.To)
	}
	return to
}

func TestDeadmanDigestNotDelivered(t *testing.T) {
	for _, tc := range []struct {
		name string
		mail error // the mail server's answer; nil: no answer at all yet
		want string
	}{
		{"mail server refusing", nil, "the Wed 10:00 check-in digest has not been delivered yet (the mail server is not accepting it"},
		{"mail server refused", envelope.Permanent("554 5.7.1", "refused"), "the Wed 10:00 check-in digest has not been delivered (the mail server refused it)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newOnCallGateway(t)
			ctx := context.Background()
			tg.step(t) // the switch starts watching on Monday
			tg.receive(t, sms(clientPhone, "see you Thursday"))
			tg.clock.Set(wednesday10)
			if id, err := tg.g.CheckIn(ctx, wednesday10, false); err != nil || id == 0 {
				t.Fatalf("CheckIn = %d, %v", id, err)
			}
			if tc.mail != nil {
				f := &fakeSender{fn: func(int, envelope.Outbound) error { return tc.mail }}
				newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.Email: f, envelope.SMS: &fakeSender{}}).Flush(ctx)
			}
			tg.clock.Set(wednesday10.Add(2*time.Hour - time.Second))
			if n := tg.step(t); n != 0 {
				t.Fatal("notice before the grace period ran out")
			}
			tg.clock.Set(wednesday10.Add(2 * time.Hour))
			before := len(outbox(t, tg.store))
			if n := tg.step(t); n != 3 {
				t.Fatalf("step sent %d notices, want 3", n)
			}
			if got := noticePhones(t, tg.store, before, tc.want); !sameStrings(got, staffPhones) {
				t.Fatalf("notices to %v, want %v", got, staffPhones)
			}
			tg.clock.Advance(time.Hour)
			if n := tg.step(t); n != 0 {
				t.Fatalf("notice sent again (%d)", n)
			}
		})
	}
}

func TestDeadmanQuietForEmptyAndOnTimeCheckins(t *testing.T) {
	tg := newOnCallGateway(t)
	ctx := context.Background()
	tg.step(t)
	// Wednesday: nothing held, send_empty off: no digest, and that is fine.
	tg.clock.Set(wednesday10)
	if id, _ := tg.g.CheckIn(ctx, wednesday10, false); id != 0 {
		t.Fatal("empty check-in made a digest")
	}
	tg.clock.Set(wednesday10.Add(3 * time.Hour))
	if n := tg.step(t); n != 0 {
		t.Fatal("false alarm for an empty check-in")
	}
	// Next Monday: a digest accepted at once.
	tg.receive(t, sms(clientPhone, "hello"))
	monday9 := time.Date(2026, 11, 23, 9, 0, 0, 0, newYork)
	tg.clock.Set(monday9)
	tg.g.CheckIn(ctx, monday9, false)
	newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.Email: &fakeSender{}, envelope.SMS: &fakeSender{}}).Flush(ctx)
	tg.clock.Set(monday9.Add(5 * time.Hour))
	if n := tg.step(t); n != 0 {
		t.Fatal("false alarm for a digest sent on time")
	}
	// Check-ins from before the gateway first ran are never reported.
	fresh := newOnCallGateway(t)
	fresh.clock.Set(wednesday10.Add(3 * time.Hour))
	fresh.step(t)
	fresh.clock.Advance(time.Hour)
	if n := fresh.step(t); n != 0 {
		t.Fatal("fresh install reported a check-in from before it ran")
	}
}

// The process was down at check-in time and the runner never caught up:
// told once, after the runner's start-up catch-up had its chance.
func TestDeadmanCheckinNeverRan(t *testing.T) {
	tg := newOnCallGateway(t)
	tg.step(t)
	tg.clock.Set(wednesday10.Add(2 * time.Hour))
	restarted := &Escalator{Store: tg.store, Practice: tg.e.Practice, Calendar: tg.e.Calendar}
	if n, err := restarted.Step(context.Background()); err != nil || n != 0 {
		t.Fatalf("notice during the catch-up wait: %d, %v", n, err)
	}
	tg.clock.Advance(catchUpWait)
	before := len(outbox(t, tg.store))
	if n, _ := restarted.Step(context.Background()); n != 3 {
		t.Fatalf("%d notices, want 3", n)
	}
	noticePhones(t, tg.store, before, "the Wed 10:00 check-in digest has not been delivered (the gateway was not running")
}

// The process was down at check-in time and caught up at start: the
// digest went out three hours late, and the staff hear it once.
func TestDeadmanLateDigest(t *testing.T) {
	tg := newOnCallGateway(t)
	ctx := context.Background()
	tg.step(t)
	tg.receive(t, sms(clientPhone, "hello"))
	tg.clock.Set(wednesday10.Add(3 * time.Hour))
	tg.g.CheckIn(ctx, wednesday10, false) // the runner's catch-up
	if n := tg.step(t); n != 0 {
		t.Fatal("notice while the caught-up digest is still on its way")
	}
	newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.Email: &fakeSender{}, envelope.SMS: &fakeSender{}}).Flush(ctx)
	before := len(outbox(t, tg.store))
	if n := tg.step(t); n != 3 {
		t.Fatalf("%d notices, want 3", n)
	}
	noticePhones(t, tg.store, before, "the Wed 10:00 check-in digest went out late, at Wed 13:00 (the gateway was not running at check-in time)")
	tg.clock.Advance(time.Hour)
	if n := tg.step(t); n != 0 {
		t.Fatal("late notice sent twice")
	}
}
