package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

func TestTimeline(t *testing.T) {
	tg := newRelayGateway(t)
	ctx := context.Background()
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	tg.clock.Advance(time.Minute)
	o.Flush(ctx) // the ack
	tok := checkInTokens(t, tg)["Ana"]
	o.Flush(ctx) // the digest
	tg.clock.Advance(time.Minute)
	tg.receive(t, relayMail(therapistAt, tok, "See you Thursday."))
	o.Flush(ctx)
	var pid string
	tg.store.db.QueryRow(`SELECT provider_id FROM outbox WHERE kind = 'relay'`).Scan(&pid)
	rec := &StatusRecorder{Store: tg.store}
	tg.clock.Advance(time.Minute)
	if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: envelope.ProviderID(pid), State: "delivered"}); err != nil {
		t.Fatal(err)
	}
	tg.clock.Advance(time.Minute)
	tg.receive(t, relayMail("mallory@example.net", tok, "Hello from nowhere"))

	id, err := tg.store.FindClient(ctx, envelope.SMS, anaPhone)
	if err != nil || id != 1 {
		t.Fatalf("FindClient = %d, %v", id, err)
	}
	if _, err := tg.store.FindClient(ctx, envelope.SMS, "+15550100999"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FindClient of a stranger: %v", err)
	}
	if _, err := tg.store.Timeline(ctx, 99, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Timeline of no client: %v", err)
	}

	evs, err := tg.store.Timeline(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.What+": "+e.Detail)
		if e.Text != "" {
			t.Fatalf("text without asking: %+v", e)
		}
	}
	all := strings.Join(got, "\n")
	want := []string{
		"received: msg 1 by text, action ack",
		"held: msg 1 held for the check-in",
		"acknowledged: ack by text (outbox 1, for msg 1): sent, provider id P1",
		"in-digest: msg 1 in digest 1 (sent)",
		"delivered: msg 1 delivered to the therapist in digest 1",
		"relayed: relay 1 from Dr. Maria Rivera by email (reply address of digest 1) to the client by text",
		"relay-delivered: relay 1 part by text (outbox 3): sent, provider id P3, delivery delivered",
		"relay-done: relay 1: all sent",
		"relay-refused: relay 2 from a sender not on the practice's list by email (reply address of digest 1): refused, unknown-sender",
	}
	last := -1
	for _, w := range want {
		i := strings.Index(all, w)
		if i < 0 || i < last {
			t.Fatalf("timeline lacks %q in order:\n%s", w, all)
		}
		last = i
	}
	for _, leak := range []string{"Ana", anaPhone, "Thursday", "therapist@example.org", "mallory"} {
		if strings.Contains(all, leak) {
			t.Fatalf("timeline without text shows %q:\n%s", leak, all)
		}
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].At.Before(evs[i-1].At) {
			t.Fatalf("events out of time order:\n%s", all)
		}
	}

	evs, err = tg.store.Timeline(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{}
	for _, e := range evs {
		if e.Text != "" {
			texts[e.What] = e.Text
		}
	}
	if texts["received"] != "Can we talk about Thursday?" || texts["relayed"] != "See you Thursday." || len(texts) != 2 {
		t.Fatalf("texts %q", texts)
	}
}
