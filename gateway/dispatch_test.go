package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

func TestReceiveAcksWithNextCheckin(t *testing.T) {
	tg := newTestGateway(t, "none")
	r := tg.receive(t, sms("(555) 010-0001", "can we talk about Tuesday?"))
	if r.Action != ActionAck || r.Duplicate || r.Urgent {
		t.Fatalf("result %+v, want a plain ack", r)
	}
	out := outbox(t, tg.store)
	if len(out) != 1 {
		t.Fatalf("%d outbox rows, want 1", len(out))
	}
	q := out[0]
	if q.Kind != "ack" || q.Channel != "sms" || q.To != "+15550100001" {
		t.Fatalf("ack row %+v", q)
	}
	// Monday 14:00 → the next check-in is Wednesday 10:00.
	if !strings.Contains(q.Body, "Wednesday at 10 a.m.") {
		t.Fatalf("ack does not name the next check-in: %q", q.Body)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE state = 'held' AND action = 'ack'`); n != 1 {
		t.Fatalf("message not held")
	}
	if n := count(t, tg.store, `SELECT count(*) FROM audit WHERE message_id = ?`, r.MessageID); n == 0 {
		t.Fatalf("no audit rows for the message")
	}
}

func TestReceiveDuplicateReturnsFirstResult(t *testing.T) {
	tg := newTestGateway(t, "brief")
	in := sms("+15550100001", "hello")
	first := tg.receive(t, in)
	tg.clock.Advance(2 * time.Hour) // a repeat would now get a brief note
	again := tg.receive(t, in)
	if !again.Duplicate || again.MessageID != first.MessageID || again.Action != first.Action {
		t.Fatalf("duplicate result %+v, first %+v", again, first)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages`); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	if n := len(outbox(t, tg.store)); n != 1 {
		t.Fatalf("%d outbox rows, want 1", n)
	}
	// The same id on another channel is another message.
	other := in
	other.Channel = envelope.Email
	other.From = "alex@example.org"
	if r := tg.receive(t, other); r.Duplicate {
		t.Fatal("same provider id on another channel treated as a duplicate")
	}
}

func TestQuietPeriodSharedAcrossChannels(t *testing.T) {
	for _, tc := range []struct {
		repeat     string
		wantRepeat string // action of the second message, an hour later
	}{
		{"none", ActionQuiet},
		{"brief", ActionAckRepeat},
	} {
		t.Run(tc.repeat, func(t *testing.T) {
			tg := newTestGateway(t, tc.repeat)
			ctx := context.Background()
			err := tg.store.UpsertClient(ctx, "Alex", []ClientAddress{
				{envelope.SMS, "+15550100001"}, {envelope.Email, "alex@example.org"}})
			if err != nil {
				t.Fatal(err)
			}
			r1 := tg.receive(t, sms("+15550100001", "first"))
			if r1.Action != ActionAck {
				t.Fatalf("first: %s", r1.Action)
			}
			tg.clock.Advance(time.Minute)
			if r := tg.receive(t, email("Alex <ALEX@example.org>", "hi", "second, by email")); r.Action != ActionQuiet || r.ClientID != r1.ClientID {
				t.Fatalf("email a minute later: %+v, want quiet for the same client", r)
			}
			tg.clock.Advance(time.Hour)
			if r := tg.receive(t, sms("+15550100001", "third")); r.Action != tc.wantRepeat {
				t.Fatalf("an hour later: %s, want %s", r.Action, tc.wantRepeat)
			}
			// Wednesday's check-in opens a new window: a full ack again.
			tg.clock.Set(time.Date(2026, 11, 18, 10, 30, 0, 0, newYork))
			if r := tg.receive(t, email("alex@example.org", "", "after the check-in")); r.Action != ActionAck {
				t.Fatalf("after the check-in: %s, want ack", r.Action)
			}
			out := outbox(t, tg.store)
			last := out[len(out)-1]
			if last.Channel != "email" || last.Subject != "Re: your message" || !strings.Contains(last.Body, "Alex") {
				t.Fatalf("email ack %+v", last)
			}
		})
	}
}

func TestUnknownSenderGetsUnknownWording(t *testing.T) {
	tg := newTestGateway(t, "none")
	tg.store.UpsertClient(context.Background(), "Alex", []ClientAddress{{envelope.SMS, "+15550100001"}})
	tg.receive(t, sms("+15550100001", "hi"))
	tg.receive(t, sms("+15550100002", "hi"))
	out := outbox(t, tg.store)
	known, unknown := out[0].Body, out[1].Body
	if known == unknown || !strings.Contains(known, "Alex") {
		t.Fatalf("known and unknown sender got the same ack:\n%s\n%s", known, unknown)
	}
}

func TestEmailAckThreads(t *testing.T) {
	tg := newTestGateway(t, "none")
	in := email("Jordan Lee <jordan@example.org>", "Rescheduling", "could we move Thursday?")
	in.References = []string{"root@mail.example.org"}
	in.FromName = "Jordan Lee"
	tg.receive(t, in)
	q := outbox(t, tg.store)[0]
	if q.To != "jordan@example.org" || q.Subject != "Re: Rescheduling" || q.InReplyTo != in.MessageID {
		t.Fatalf("email ack %+v", q)
	}
	var refs string
	tg.store.db.QueryRow(`SELECT refs FROM outbox`).Scan(&refs)
	if want := `["root@mail.example.org","` + in.MessageID + `"]`; refs != want {
		t.Fatalf("references %s, want %s", refs, want)
	}
}

func TestUrgentRaisesAlertAndPagesOnCall(t *testing.T) {
	tg := newTestGateway(t, "none")
	tg.receive(t, sms("+15550100001", "routine first")) // the window's ack is used up
	r := tg.receive(t, sms("+15550100001", "I can't keep myself safe tonight"))
	if r.Action != ActionUrgent || !r.Urgent || r.AlertID == 0 {
		t.Fatalf("result %+v, want urgent with an alert", r)
	}
	out := outbox(t, tg.store)[1:]
	kinds := map[string]queued{}
	for _, q := range out {
		kinds[q.Kind+"/"+q.Channel] = q
	}
	if len(out) != 3 {
		t.Fatalf("queued %v, want on-call SMS and email and the urgent reply", kinds)
	}
	if q := kinds["oncall/sms"]; q.To != "+15550100900" || !strings.Contains(q.Body, "ACK 1") {
		t.Fatalf("on-call SMS %+v", q)
	}
	if q := kinds["oncall/email"]; q.To != "oncall@example.org" || !strings.Contains(q.Body, "can't keep myself safe tonight") {
		t.Fatalf("on-call email %+v", q)
	}
	reply := kinds["urgent_reply/sms"]
	if i, j := strings.Index(reply.Body, "988"), strings.Index(reply.Body, "911"); i < 0 || j < 0 {
		t.Fatalf("urgent reply lacks crisis line or emergency number: %q", reply.Body)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE state = 'urgent'`); n != 1 {
		t.Fatal("urgent message not marked urgent")
	}
	if n := count(t, tg.store, `SELECT count(*) FROM alerts WHERE next_escalation_at IS NOT NULL AND acked_at IS NULL`); n != 1 {
		t.Fatal("alert not waiting for acknowledgement")
	}
}

func TestOptOutAndBack(t *testing.T) {
	tg := newTestGateway(t, "brief")
	if r := tg.receive(t, sms("+15550100001", "Stop")); r.Action != ActionOptOut {
		t.Fatalf("STOP: %s", r.Action)
	}
	tg.clock.Advance(2 * time.Hour)
	if r := tg.receive(t, sms("+15550100001", "one more thing")); r.Action != ActionAck {
		t.Fatalf("after STOP: %s", r.Action)
	}
	if n := len(outbox(t, tg.store)); n != 0 {
		t.Fatalf("queued %d texts to an opted-out number", n)
	}
	if r := tg.receive(t, sms("+15550100001", "START")); r.Action != ActionOptIn {
		t.Fatalf("START: %s", r.Action)
	}
	in := sms("+15550100001", "anything")
	in.OptOut = "HELP" // Twilio's Advanced Opt-Out says so
	if r := tg.receive(t, in); r.Action != ActionHelp {
		t.Fatalf("OptOutType HELP: %s", r.Action)
	}
	if out := outbox(t, tg.store); len(out) != 1 || out[0].Kind != "help" {
		t.Fatalf("queued %+v, want one help reply", out)
	}
	// Every message still reaches the therapist.
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE state = 'held'`); n != 4 {
		t.Fatalf("%d held, want 4", n)
	}
}

func TestAutomatedMailNeverAcknowledged(t *testing.T) {
	tg := newTestGateway(t, "brief")
	in := email("mailer-daemon@example.org", "Out of office", "I am away until Monday.")
	in.Automated = true
	if r := tg.receive(t, in); r.Action != ActionAutomated {
		t.Fatalf("action %s", r.Action)
	}
	if n := len(outbox(t, tg.store)); n != 0 {
		t.Fatalf("acknowledged automated mail")
	}
}

func TestUnsafeAutomatedMailStillPagesOnCall(t *testing.T) {
	tg := newTestGateway(t, "brief")
	// An auto-forward or a mail program's odd headers must not hide risk.
	in := email("client@example.org", "Fwd: tonight", "I took all my pills and wrote goodbye letters")
	in.Automated = true
	r := tg.receive(t, in)
	if r.Action != ActionUrgent || r.AlertID == 0 {
		t.Fatalf("result %+v, want urgent with an alert", r)
	}
	for _, q := range outbox(t, tg.store) {
		if q.To == "client@example.org" {
			t.Errorf("replied to automated mail: %+v", q)
		}
	}
}

func TestMailWithoutSenderIsFiled(t *testing.T) {
	tg := newTestGateway(t, "brief")
	in := email("", "", "a message whose From header could not be read")
	r := tg.receive(t, in)
	if r.MessageID == 0 || r.Action != ActionAutomated {
		t.Fatalf("result %+v, want filed and not answered", r)
	}
	if n := len(outbox(t, tg.store)); n != 0 {
		t.Fatalf("queued %d replies to nobody", n)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE notes LIKE '%no readable sender%'`); n != 1 {
		t.Fatal("no note for the digest")
	}
}

func TestReceiveFailureLeavesNothingHalfWritten(t *testing.T) {
	tg := newTestGateway(t, "none")
	// The last write of an urgent message is the outbox row of the reply:
	// make the database refuse it.
	if _, err := tg.store.db.Exec(`
		CREATE TRIGGER refuse_reply BEFORE INSERT ON outbox WHEN NEW.kind = 'urgent_reply'
		BEGIN SELECT RAISE(ABORT, 'injected failure'); END`); err != nil {
		t.Fatal(err)
	}
	in := sms("+15550100001", "i want to kill myself")
	in.ReceivedAt = tg.clock.Now()
	if _, err := tg.d.Receive(context.Background(), in); err == nil {
		t.Fatal("Receive succeeded despite the failure")
	}
	for _, table := range []string{"clients", "client_addresses", "messages", "alerts", "outbox", "audit"} {
		if n := count(t, tg.store, `SELECT count(*) FROM `+table); n != 0 {
			t.Errorf("%s has %d rows after a failed Receive", table, n)
		}
	}
	// The provider retries; now it goes through, once.
	tg.store.db.Exec(`DROP TRIGGER refuse_reply`)
	if r := tg.receive(t, in); r.Duplicate || r.Action != ActionUrgent {
		t.Fatalf("retry: %+v", r)
	}
}

func TestReceiveRejectsBadInput(t *testing.T) {
	tg := newTestGateway(t, "none")
	for name, in := range map[string]envelope.Inbound{
		"no channel":     {ProviderID: "x", From: "+15550100001"},
		"no provider id": {Channel: envelope.SMS, From: "+15550100001"},
		"no sender":      {Channel: envelope.SMS, ProviderID: "x"},
	} {
		if _, err := tg.d.Receive(context.Background(), in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A sender id that is not a phone number is kept as written.
	if r := tg.receive(t, sms("PharmacyCo", "your order is ready")); r.MessageID == 0 {
		t.Fatal("alphanumeric sender lost")
	}
}

func TestNormalizePhone(t *testing.T) {
	for _, tc := range []struct{ in, region, want string }{
		{"(555) 010-0001", "US", "+15550100001"},
		{"+1 555 010 0001", "US", "+15550100001"},
		{"555.010.0001", "us", "+15550100001"},
		{"030 1234567", "DE", "+49301234567"},
		{"+44 20 7946 0958", "US", "+442079460958"},
	} {
		got, err := NormalizePhone(tc.in, tc.region)
		if err != nil || string(got) != tc.want {
			t.Errorf("NormalizePhone(%q, %s) = %q, %v; want %s", tc.in, tc.region, got, err, tc.want)
		}
	}
	if _, err := NormalizePhone("hello", "US"); err == nil {
		t.Error("accepted a word as a phone number")
	}
}
