package gateway

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// The chain the on-call stories use.
const (
	danaPhone      = "+15550100901"
	samPhone       = "+15550100902"
	robinPhone     = "+15550100903"
	therapistPhone = "+15550100999"
	clientPhone    = "+15550100001"
)

var (
	dana  = OnCall{Name: "Dana", Phone: danaPhone, Email: "dana@example.org", After: 10 * time.Minute}
	sam   = OnCall{Name: "Sam", Phone: samPhone, Email: "sam@example.org", After: 10 * time.Minute}
	robin = OnCall{Name: "Robin", Phone: robinPhone, After: 5 * time.Minute}
)

// newOnCallGateway is a test gateway with Dana (primary) and Sam (backup)
// on call and a therapist phone.
func newOnCallGateway(t testing.TB) *testGateway {
	t.Helper()
	tg := newTestGateway(t, "none")
	tg.setPractice(func(p *Practice) {
		p.OnCall = []OnCall{dana, sam}
		p.TherapistPhone = therapistPhone
		p.RepeatEvery = 15 * time.Minute
	})
	return tg
}

// step runs one escalator step and returns what it did.
func (tg *testGateway) step(t testing.TB) int {
	t.Helper()
	n, err := tg.e.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pages returns the outbox rows of kinds oncall and escalation after row
// from, as "channel:recipient".
func pages(t testing.TB, s *Store, from int) []string {
	t.Helper()
	var out []string
	for _, q := range outbox(t, s)[from:] {
		if q.Kind == "oncall" || q.Kind == "escalation" {
			out = append(out, q.Channel+":"+q.To)
		}
	}
	return out
}

// notices returns the notice rows after row from.
func notices(t testing.TB, s *Store, from int) []queued {
	t.Helper()
	var out []queued
	for _, q := range outbox(t, s)[from:] {
		if q.Kind == "notice" {
			out = append(out, q)
		}
	}
	return out
}

func sameStrings(a, b []string) bool {
	return strings.Join(a, "|") == strings.Join(b, "|")
}

func urgentFrom(t testing.TB, tg *testGateway, phone string) Result {
	t.Helper()
	r := tg.receive(t, sms(phone, "I can't keep myself safe tonight"))
	if r.AlertID == 0 {
		t.Fatalf("no alert raised: %+v", r)
	}
	return r
}

func TestChainRotation(t *testing.T) {
	a, b, c := OnCall{Name: "A"}, OnCall{Name: "B"}, OnCall{Name: "C"}
	local := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, newYork) }
	// Weeks start on Mondays at 09:00 New York time. DST begins Sunday
	// 8 March 2026 and ends Sunday 1 November 2026.
	spring := &Rotation{Start: local(2026, 3, 2, 9, 0)}
	fall := &Rotation{Start: local(2026, 10, 26, 9, 0)}
	for _, tc := range []struct {
		name string
		rot  *Rotation
		at   time.Time
		want string
	}{
		{"no rotation", nil, local(2026, 3, 20, 12, 0), "ABC"},
		{"first moment", spring, local(2026, 3, 2, 9, 0), "ABC"},
		{"end of the first week", spring, local(2026, 3, 9, 8, 59), "ABC"},
		// 09:30 EDT on 9 March is 167.5 h after the start: 168 h arithmetic
		// would still say week 0.
		{"week 2 begins by the local clock across spring-forward", spring, local(2026, 3, 9, 9, 30), "BCA"},
		{"week 3", spring, local(2026, 3, 18, 23, 0), "CAB"},
		{"wraps around", spring, local(2026, 3, 23, 9, 0), "ABC"},
		{"before the start counts back", spring, local(2026, 3, 1, 12, 0), "CAB"},
		// 08:30 EST on 2 November is 168.5 h after the start: 168 h
		// arithmetic would already say week 1.
		{"week 1 lasts until 09:00 local across fall-back", fall, local(2026, 11, 2, 8, 30), "ABC"},
		{"week 2 at 09:00 local after fall-back", fall, local(2026, 11, 2, 9, 0), "BCA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Practice{Location: newYork, OnCall: []OnCall{a, b, c}, Rotation: tc.rot}
			var got string
			for _, o := range p.Chain(tc.at) {
				got += o.Name
				if o.After != DefaultEscalateAfter {
					t.Errorf("%s: After %v, want the default", o.Name, o.After)
				}
			}
			if got != tc.want {
				t.Fatalf("Chain(%s) = %s, want %s", tc.at.Format(time.RFC3339), got, tc.want)
			}
		})
	}
}

func TestParseAck(t *testing.T) {
	for in, want := range map[string]int64{
		"ACK": 0, "ack": 0, " Ack. ": 0, "ACK!": 0, "ACK 12": 12, "ack #12": 12, "ACK12": 12, "Ack # 7.": 7,
		"acknowledged 3": 3, "ACKNOWLEDGE": 0,
	} {
		if got, ok := parseAck(in); !ok || got != want {
			t.Errorf("parseAck(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "ok", "back", "ack me later", "ACK 12 13", "I will ack", "ACK -1", "ACK 1234567890"} {
		if _, ok := parseAck(in); ok {
			t.Errorf("parseAck(%q) accepted", in)
		}
	}
}

// The whole story: alert → no ack → escalation to the backup → ACK by SMS
// from the backup → the primary is told, timers cleared, no more pages.
func TestEscalationThenAckBySMS(t *testing.T) {
	tg := newOnCallGateway(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tg.d.Logger, tg.e.Logger = logger, logger
	start := tg.clock.Now()

	r := urgentFrom(t, tg, clientPhone)
	if got, want := pages(t, tg.store, 0), []string{"sms:" + danaPhone, "email:dana@example.org"}; !sameStrings(got, want) {
		t.Fatalf("first pages %v, want %v", got, want)
	}
	var chain string
	tg.store.db.QueryRow(`SELECT chain FROM alerts WHERE id = ?`, r.AlertID).Scan(&chain)
	if chain != "[0,1]" {
		t.Fatalf("stored chain %s", chain)
	}

	tg.clock.Advance(9 * time.Minute)
	if n := tg.step(t); n != 0 {
		t.Fatalf("escalated after 9 minutes (%d)", n)
	}
	tg.clock.Advance(time.Minute)
	before := len(outbox(t, tg.store))
	if n := tg.step(t); n != 1 {
		t.Fatalf("step after 10 minutes did %d things, want 1", n)
	}
	if got, want := pages(t, tg.store, before), []string{"sms:" + samPhone, "email:sam@example.org"}; !sameStrings(got, want) {
		t.Fatalf("escalation pages %v, want %v", got, want)
	}
	out := outbox(t, tg.store)
	if q := out[before]; q.Kind != "escalation" || !strings.Contains(q.Body, "URGENT #1 (escalated)") || !strings.Contains(q.Body, "Reply ACK 1") ||
		!strings.Contains(q.Body, clientPhone) {
		t.Fatalf("escalation SMS %+v", q)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM alert_pages WHERE alert_id = ? AND step = 1 AND person = 'Sam'`, r.AlertID); n != 2 {
		t.Fatalf("%d pages recorded for Sam", n)
	}
	if n := tg.step(t); n != 0 {
		t.Fatalf("second step at the same moment did %d things", n)
	}

	tg.clock.Advance(2 * time.Minute)
	before = len(outbox(t, tg.store))
	ack := tg.receive(t, sms("(555) 010-0902", "ack"))
	if ack.Action != ActionAlertAck || ack.AlertID != r.AlertID || ack.MessageID != 0 {
		t.Fatalf("ACK result %+v", ack)
	}
	var by, via string
	var next *string
	tg.store.db.QueryRow(`SELECT acked_by, acked_via, next_escalation_at FROM alerts WHERE id = ?`, r.AlertID).Scan(&by, &via, &next)
	if by != "Sam" || via != "sms" || next != nil {
		t.Fatalf("alert acked_by %q via %q next %v", by, via, next)
	}
	told := notices(t, tg.store, before)
	if len(told) != 2 {
		t.Fatalf("notices %+v, want a confirmation to Sam and a note to Dana", told)
	}
	if told[0].To != danaPhone || told[0].Channel != "sms" ||
		told[0].Body != "Alert #1 is handled: Sam acknowledged at 2:12 PM. No action needed." {
		t.Fatalf("Dana told %+v", told[0])
	}
	if told[1].To != samPhone || !strings.Contains(told[1].Body, "alert #1 is yours") {
		t.Fatalf("Sam's confirmation %+v", told[1])
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages`); n != 1 {
		t.Fatalf("%d messages stored; the ACK is not a client message", n)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM staff_messages WHERE person = 'Sam' AND action = 'alert_ack'`); n != 1 {
		t.Fatalf("%d staff messages recorded", n)
	}

	tg.clock.Set(start.Add(3 * time.Hour))
	before = len(outbox(t, tg.store))
	if n := tg.step(t); n != 0 || len(outbox(t, tg.store)) != before {
		t.Fatalf("paged after the ACK (%d)", n)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM audit WHERE event = 'alert:acked:sms' AND alert_id = ?`, r.AlertID); n != 1 {
		t.Fatal("acknowledgement not audited")
	}
	for _, secret := range []string{clientPhone, danaPhone, samPhone, "Dana", "Sam", "safe tonight", "example.org"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("logs carry %q:\n%s", secret, logs.String())
		}
	}
}

func TestAckDuplicateDeliveryAnsweredOnce(t *testing.T) {
	tg := newOnCallGateway(t)
	urgentFrom(t, tg, clientPhone)
	in := sms(danaPhone, "ACK 1")
	first := tg.receive(t, in)
	n := len(outbox(t, tg.store))
	again := tg.receive(t, in)
	if !again.Duplicate || again.Action != ActionAlertAck || again.AlertID != first.AlertID || len(outbox(t, tg.store)) != n {
		t.Fatalf("redelivered ACK: %+v, %d rows (was %d)", again, len(outbox(t, tg.store)), n)
	}
}

func TestAckWhenSeveralAlertsOpen(t *testing.T) {
	tg := newOnCallGateway(t)
	a1 := urgentFrom(t, tg, clientPhone)
	a2 := urgentFrom(t, tg, "+15550100002")

	before := len(outbox(t, tg.store))
	if r := tg.receive(t, sms(danaPhone, "ACK")); r.Action != ActionAlertAckAsk || r.AlertID != 0 {
		t.Fatalf("plain ACK with two open: %+v", r)
	}
	if q := notices(t, tg.store, before); len(q) != 1 || q[0].To != danaPhone ||
		q[0].Body != "2 alerts are open: #1, #2. Reply ACK 1 or ACK 2." {
		t.Fatalf("question %+v", q)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM alerts WHERE acked_at IS NULL`); n != 2 {
		t.Fatalf("%d alerts open after a plain ACK, want both", n)
	}

	if r := tg.receive(t, sms(danaPhone, "ACK 2")); r.Action != ActionAlertAck || r.AlertID != a2.AlertID {
		t.Fatalf("ACK 2: %+v", r)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM alerts WHERE acked_at IS NULL AND id = ?`, a1.AlertID); n != 1 {
		t.Fatal("ACK 2 acknowledged alert 1 too")
	}

	tg.clock.Advance(time.Minute)
	before = len(outbox(t, tg.store))
	if r := tg.receive(t, sms(samPhone, "ack #2")); r.Action != ActionAlertAckAlready {
		t.Fatalf("ACK of an acknowledged alert: %+v", r)
	}
	if r := tg.receive(t, sms(danaPhone, "ACK 2")); r.Action != ActionAlertAckAlready {
		t.Fatalf("second ACK by the same person: %+v", r)
	}
	q := notices(t, tg.store, before)
	if len(q) != 2 || q[0].To != samPhone || q[0].Body != "Alert #2 was already acknowledged by Dana at 2:00 PM. No action needed." ||
		q[1].Body != "You already acknowledged alert #2 at 2:00 PM." {
		t.Fatalf("replies %+v", q)
	}
	var by string
	tg.store.db.QueryRow(`SELECT acked_by FROM alerts WHERE id = ?`, a2.AlertID).Scan(&by)
	if by != "Dana" {
		t.Fatalf("acked_by %q changed", by)
	}

	// Now only one is open: a plain ACK takes it.
	if r := tg.receive(t, sms(samPhone, "Ack.")); r.Action != ActionAlertAck || r.AlertID != a1.AlertID {
		t.Fatalf("plain ACK with one open: %+v", r)
	}
	if r := tg.receive(t, sms(samPhone, "ACK")); r.Action != ActionAlertAckInvalid {
		t.Fatalf("plain ACK with none open: %+v", r)
	}
	if r := tg.receive(t, sms(samPhone, "ACK 99")); r.Action != ActionAlertAckInvalid {
		t.Fatalf("ACK of an unknown alert: %+v", r)
	}
}

func TestAckFromUnknownNumberIsAClientMessage(t *testing.T) {
	tg := newOnCallGateway(t)
	a := urgentFrom(t, tg, clientPhone)
	r := tg.receive(t, sms("+15550100777", "ACK 1"))
	if r.MessageID == 0 || r.Action == ActionAlertAck || r.AlertID != 0 {
		t.Fatalf("ACK from a stranger: %+v, want an ordinary client message", r)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE body = 'ACK 1' AND state = 'held'`); n != 1 {
		t.Fatal("stranger's ACK not held for the digest")
	}
	// A staff phone that sends something else is heard as a client too.
	if r := tg.receive(t, sms(danaPhone, "running late for our session")); r.MessageID == 0 {
		t.Fatalf("staff non-ACK text: %+v", r)
	}
	tg.clock.Advance(10 * time.Minute)
	before := len(outbox(t, tg.store))
	tg.step(t)
	if got := pages(t, tg.store, before); len(got) != 2 {
		t.Fatalf("alert %d did not escalate after a stranger's ACK: %v", a.AlertID, got)
	}
}

// Chain exhaustion pages everyone and the therapist, says nobody
// acknowledged, and repeats every RepeatEvery until someone does.
func TestChainExhaustionPagesEveryoneAndRepeats(t *testing.T) {
	tg := newOnCallGateway(t)
	a := urgentFrom(t, tg, clientPhone)
	tg.clock.Advance(10 * time.Minute)
	tg.step(t) // Sam
	tg.clock.Advance(10 * time.Minute)
	before := len(outbox(t, tg.store))
	if n := tg.step(t); n != 1 {
		t.Fatalf("exhaustion step did %d", n)
	}
	everyone := []string{"sms:" + danaPhone, "email:dana@example.org", "sms:" + samPhone, "email:sam@example.org",
		"sms:" + therapistPhone, "email:therapist@example.org"}
	if got := pages(t, tg.store, before); !sameStrings(got, everyone) {
		t.Fatalf("exhaustion pages %v, want %v", got, everyone)
	}
	for _, q := range outbox(t, tg.store)[before:] {
		if q.Channel == "sms" && !strings.Contains(q.Body, "NOBODY HAS ACKNOWLEDGED") {
			t.Fatalf("exhaustion SMS does not say nobody acknowledged: %q", q.Body)
		}
	}
	var exhausted *string
	tg.store.db.QueryRow(`SELECT exhausted_at FROM alerts WHERE id = ?`, a.AlertID).Scan(&exhausted)
	if exhausted == nil {
		t.Fatal("exhausted_at not recorded")
	}

	tg.clock.Advance(14 * time.Minute)
	if n := tg.step(t); n != 0 {
		t.Fatal("repeated before RepeatEvery")
	}
	tg.clock.Advance(time.Minute)
	before = len(outbox(t, tg.store))
	tg.step(t)
	if got := pages(t, tg.store, before); !sameStrings(got, everyone) {
		t.Fatalf("repeat pages %v", got)
	}

	// The therapist's own phone may acknowledge.
	before = len(outbox(t, tg.store))
	if r := tg.receive(t, sms(therapistPhone, "ACK 1")); r.Action != ActionAlertAck {
		t.Fatalf("therapist ACK: %+v", r)
	}
	told := notices(t, tg.store, before)
	if len(told) != 3 || told[0].To != danaPhone || told[1].To != samPhone || told[2].To != therapistPhone {
		t.Fatalf("after the therapist's ACK: %+v", told)
	}
	tg.clock.Advance(time.Hour)
	if n := tg.step(t); n != 0 {
		t.Fatal("paged after the therapist acknowledged")
	}
}

// A restart in the middle of the chain continues at the right step, with
// the chain fixed when the alert was raised, even across a rotation week.
func TestRestartInTheMiddleOfTheChain(t *testing.T) {
	path := t.TempDir() + "/gateway.db"
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	tg := newTestGateway(t, "none")
	tg.store, tg.d.Store, tg.g.Store, tg.e.Store = s, s, s, s
	s.Now = tg.clock.Now
	// Sunday 22 November, 23:55: Dana's week; at midnight Sam's begins.
	tg.clock.Set(time.Date(2026, 11, 22, 23, 55, 0, 0, newYork))
	tg.setPractice(func(p *Practice) {
		p.OnCall = []OnCall{dana, sam, robin}
		p.Rotation = &Rotation{Start: time.Date(2026, 11, 16, 0, 0, 0, 0, newYork)}
	})
	urgentFrom(t, tg, clientPhone)
	tg.clock.Advance(10 * time.Minute) // Monday 00:05, Sam's week now
	tg.step(t)
	if got := pages(t, s, 0); !sameStrings(got, []string{"sms:" + danaPhone, "email:dana@example.org", "sms:" + samPhone, "email:sam@example.org"}) {
		t.Fatalf("pages before the restart %v", got)
	}
	s.Close()

	// A new process, minutes later.
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	c := &clock{t: tg.clock.Now().Add(10 * time.Minute)}
	s2.Now = c.Now
	e := &Escalator{Store: s2, Practice: tg.e.Practice, Calendar: tg.e.Calendar}
	before := len(outbox(t, s2))
	if n, err := e.Step(ctx); err != nil || n != 1 {
		t.Fatalf("step after restart: %d, %v", n, err)
	}
	if got := pages(t, s2, before); !sameStrings(got, []string{"sms:" + robinPhone}) {
		t.Fatalf("after restart paged %v, want Robin, third in the chain fixed at raise", got)
	}
	if n, _ := e.Step(ctx); n != 0 {
		t.Fatal("paged twice")
	}
	// Robin waits 5 minutes, not 10.
	c.Advance(5 * time.Minute)
	if n, _ := e.Step(ctx); n != 1 {
		t.Fatal("did not page everyone after Robin's 5 minutes")
	}
	if n := count(t, s2, `SELECT count(*) FROM alert_pages WHERE step = 3`); n != 6 {
		t.Fatalf("%d pages at the everyone step, want 6 (Dana, Sam by text and email; Robin by text; the therapist by email)", n)
	}
}

func TestFailedOnCallSMSEscalatesAtOnce(t *testing.T) {
	tg := newOnCallGateway(t)
	f := &fakeSender{fn: func(_ int, m envelope.Outbound) error {
		if m.To == danaPhone {
			return envelope.Permanent("21211", "invalid number")
		}
		return nil
	}}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	o.OnPageFailed = tg.e.Kick
	tg.e.Outbox = o
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- tg.e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	runOutbox(t, o)

	a := urgentFrom(t, tg, clientPhone)
	o.Kick()
	// The fake clock stands still: only the failure can bring Sam's turn.
	waitFor(t, "Sam paged", func() bool {
		for _, m := range f.Sent() {
			if m.To == samPhone && m.Kind == envelope.KindEscalation {
				return true
			}
		}
		return false
	})
	var step int
	tg.store.db.QueryRow(`SELECT step FROM alerts WHERE id = ?`, a.AlertID).Scan(&step)
	if step != 1 {
		t.Fatalf("step %d, want 1", step)
	}
	if tg.e.Alive().IsZero() {
		t.Fatal("Run does not report itself alive")
	}
}

func TestFailedPageEscalatesOnlyForTheCurrentStep(t *testing.T) {
	tg := newOnCallGateway(t)
	a := urgentFrom(t, tg, clientPhone)
	var smsID, emailID int64
	tg.store.db.QueryRow(`SELECT outbox_id FROM alert_pages WHERE channel = 'sms'`).Scan(&smsID)
	tg.store.db.QueryRow(`SELECT outbox_id FROM alert_pages WHERE channel = 'email'`).Scan(&emailID)
	failed := func(id int64) bool {
		var moved bool
		err := tg.store.tx(context.Background(), func(tx *sql.Tx, now time.Time) error {
			var err error
			moved, err = pageFailed(context.Background(), tx, now, id)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return moved
	}
	if failed(emailID) {
		t.Fatal("a failed email escalated although Dana's text page stands")
	}
	tg.clock.Advance(10 * time.Minute)
	tg.step(t) // Sam's turn
	if failed(smsID) {
		t.Fatal("a late failure of Dana's page skipped Sam")
	}
	var next string
	tg.store.db.QueryRow(`SELECT next_escalation_at FROM alerts WHERE id = ?`, a.AlertID).Scan(&next)
	if next != fmtTime(tg.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("next escalation %s moved", next)
	}
}

func TestDigestShowsAlertHistory(t *testing.T) {
	tg := newOnCallGateway(t)
	ctx := context.Background()
	urgentFrom(t, tg, clientPhone)
	tg.receive(t, sms("+15550100002", "routine"))
	tg.clock.Advance(10 * time.Minute)
	tg.step(t)
	tg.clock.Advance(2 * time.Minute)
	tg.receive(t, sms(samPhone, "ACK"))
	urgentFrom(t, tg, "+15550100003") // still open at the check-in

	tg.clock.Set(time.Date(2026, 11, 18, 10, 0, 0, 0, newYork))
	if _, err := tg.g.CheckIn(ctx, tg.clock.Now(), false); err != nil {
		t.Fatal(err)
	}
	_, text, html := digestMail(t, tg.store)
	acked := "Alert #1: 14:00 paged Dana (text, email) · 14:10 paged Sam (text, email) · 14:12 acknowledged by Sam (text)"
	open := "Alert #2: 14:12 paged Dana (text, email) · not acknowledged"
	for _, want := range []string{acked, open} {
		if !strings.Contains(text, want) || !strings.Contains(html, want) {
			t.Fatalf("digest lacks %q:\n%s", want, text)
		}
	}
	// Urgent first: both alerts before the routine message.
	if i, j := strings.Index(text, open), strings.Index(text, "routine"); i < 0 || j < i {
		t.Fatalf("urgent messages do not head the digest:\n%s", text)
	}
	if strings.Contains(text, "ACK") {
		t.Fatalf("staff ACK shown as a client message:\n%s", text)
	}
}

func TestAckCancelsPagesWaitingForRetry(t *testing.T) {
	tg := newOnCallGateway(t)
	ctx := context.Background()
	r := urgentFrom(t, tg, clientPhone)
	// Dana's text went out; her email is waiting to be retried.
	tg.store.db.Exec(`UPDATE outbox SET state = 'sent' WHERE alert_id = ? AND channel = 'sms'`, r.AlertID)
	tg.store.db.Exec(`UPDATE outbox SET attempts = 1, error = 'timeout' WHERE alert_id = ? AND channel = 'email'`, r.AlertID)

	tg.receive(t, sms(danaPhone, "ACK"))
	var state, code string
	tg.store.db.QueryRow(`SELECT state, error_code FROM outbox WHERE alert_id = ? AND kind = 'oncall' AND channel = 'email'`, r.AlertID).Scan(&state, &code)
	if state != "failed" || code != "cancelled" {
		t.Fatalf("waiting page left %s/%s after the ACK, want failed/cancelled", state, code)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM outbox WHERE alert_id = ? AND kind = 'oncall' AND state = 'sent'`, r.AlertID); n != 1 {
		t.Fatalf("%d sent pages, want the text untouched", n)
	}

	tg.clock.Set(time.Date(2026, 11, 18, 10, 0, 0, 0, newYork))
	if _, err := tg.g.CheckIn(ctx, tg.clock.Now(), false); err != nil {
		t.Fatal(err)
	}
	_, text, _ := digestMail(t, tg.store)
	if strings.Contains(text, "failed deliver") || strings.Contains(text, "NOT delivered") || strings.Contains(text, "cancelled") {
		t.Fatalf("a cancelled page is shown as a failed delivery:\n%s", text)
	}
}
