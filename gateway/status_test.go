package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

func sentWithSID(t *testing.T, s *Store, r outRow, sid string) int64 {
	t.Helper()
	id := queue(t, s, r)
	if _, err := s.db.Exec(`UPDATE outbox SET state = 'sent', provider_id = ? WHERE id = ?`, sid, id); err != nil {
		t.Fatal(err)
	}
	return id
}

func deliveryStatus(t *testing.T, s *Store, id int64) (status, code string) {
	t.Helper()
	if err := s.db.QueryRow(`SELECT delivery_status, error_code FROM outbox WHERE id = ?`, id).Scan(&status, &code); err != nil {
		t.Fatal(err)
	}
	return
}

func TestStatusMovesForwardOnly(t *testing.T) {
	s := mustOpenStore(t)
	rec := &StatusRecorder{Store: s}
	id := sentWithSID(t, s, ackRow, "SM1")
	ctx := context.Background()
	for _, st := range []string{"sent", "delivered", "sent", "queued"} { // out of order
		if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: "SM1", State: st}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := deliveryStatus(t, s, id); got != "delivered" {
		t.Fatalf("status %q, want delivered", got)
	}
	// Unknown SIDs and states are ignored.
	if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: "SMother", State: "failed"}); err != nil {
		t.Fatal(err)
	}
	if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: "SM1", State: "receiving"}); err != nil {
		t.Fatal(err)
	}
}

func TestFailedAckAppearsInDigest(t *testing.T) {
	tg := newTestGateway(t, "none")
	ctx := context.Background()
	tg.receive(t, sms("+15550100001", "hello"))
	tg.store.db.Exec(`UPDATE outbox SET state = 'sent', provider_id = 'SMack'`)
	rec := &StatusRecorder{Store: tg.store}
	if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: "SMack", State: "undelivered", ErrorCode: "30003"}); err != nil {
		t.Fatal(err)
	}
	if status, code := deliveryStatus(t, tg.store, 1); status != "undelivered" || code != "30003" {
		t.Fatalf("status %q code %q", status, code)
	}
	tg.g.CheckIn(ctx, tg.clock.Now(), true)
	subject, text, _ := digestMail(t, tg.store)
	if !strings.Contains(subject, "1 failed delivery") || !strings.Contains(text, "acknowledgement to client 1 by text") ||
		!strings.Contains(text, "(30003)") {
		t.Fatalf("digest does not list the failed ack:\n%s\n%s", subject, text)
	}
}

func TestFailedOnCallPageEscalatesNow(t *testing.T) {
	tg := newTestGateway(t, "none")
	ctx := context.Background()
	r := tg.receive(t, sms("+15550100001", "i want to kill myself"))
	tg.store.db.Exec(`UPDATE outbox SET state = 'sent', provider_id = 'SM' || id`)
	var sid string
	tg.store.db.QueryRow(`SELECT provider_id FROM outbox WHERE kind = 'oncall' AND channel = 'sms'`).Scan(&sid)
	rec := &StatusRecorder{Store: tg.store}
	if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: envelope.ProviderID(sid), State: "failed", ErrorCode: "30006"}); err != nil {
		t.Fatal(err)
	}
	var next string
	tg.store.db.QueryRow(`SELECT next_escalation_at FROM alerts WHERE id = ?`, r.AlertID).Scan(&next)
	if next != fmtTime(tg.clock.Now()) {
		t.Fatalf("next escalation %s, want now (%s)", next, fmtTime(tg.clock.Now()))
	}
}

func TestUnsubscribedRecipientRecordedAsOptedOut(t *testing.T) {
	s := mustOpenStore(t)
	ctx := context.Background()
	// From a status callback...
	sentWithSID(t, s, ackRow, "SM1")
	(&StatusRecorder{Store: s}).HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: "SM1", State: "failed", ErrorCode: "21610"})
	if out, _ := s.OptedOut(ctx, envelope.SMS, "+15550100001"); !out {
		t.Fatal("21610 in a status callback did not record an opt-out")
	}
	// ...and from a refused send.
	f := &fakeSender{fn: func(int, envelope.Outbound) error { return envelope.Permanent("21610", "unsubscribed") }}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: f})
	row := ackRow
	row.to = "+15550100002"
	queue(t, s, row)
	o.Flush(ctx)
	if out, _ := s.OptedOut(ctx, envelope.SMS, "+15550100002"); !out {
		t.Fatal("21610 from the API did not record an opt-out")
	}
}

func TestStatusBeforeSIDRecordedIsKept(t *testing.T) {
	s := mustOpenStore(t)
	ctx := context.Background()
	// Twilio fails the message and calls back before our outbox records
	// the SID it was given.
	rec := &StatusRecorder{Store: s}
	for _, st := range []string{"failed", "sent"} {
		if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: "SMfast", State: st, ErrorCode: map[bool]string{true: "30006"}[st == "failed"]}); err != nil {
			t.Fatal(err)
		}
	}
	id := queue(t, s, ackRow)
	f := &fakeSender{}
	o := newOutbox(s, map[envelope.Channel]envelope.Sender{envelope.SMS: sidSender{f, "SMfast"}})
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if status, code := deliveryStatus(t, s, id); status != "failed" || code != "30006" {
		t.Fatalf("status %q code %q, want the early failed report applied", status, code)
	}
	if n := count(t, s, `SELECT count(*) FROM early_reports`); n != 0 {
		t.Fatalf("%d early reports left", n)
	}
}

// sidSender sends through f but answers with a fixed provider id.
type sidSender struct {
	f   *fakeSender
	sid envelope.ProviderID
}

func (s sidSender) Send(ctx context.Context, m envelope.Outbound) (envelope.ProviderID, error) {
	_, err := s.f.Send(ctx, m)
	return s.sid, err
}
