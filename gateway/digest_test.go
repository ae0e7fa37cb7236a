package gateway

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// digestMail returns the queued digest rows' subject, text and HTML.
func digestMail(t testing.TB, s *Store) (subject, text, html string) {
	t.Helper()
	err := s.db.QueryRow(`SELECT subject, body, html FROM outbox WHERE kind = 'digest' ORDER BY id DESC LIMIT 1`).
		Scan(&subject, &text, &html)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func TestDigestOrderAndContent(t *testing.T) {
	tg := newTestGateway(t, "none")
	ctx := context.Background()
	tg.store.UpsertClient(ctx, "Alex", []ClientAddress{{envelope.SMS, "+15550100001"}})
	tg.receive(t, sms("+15550100002", "Blair: oldest routine"))
	tg.clock.Advance(time.Minute)
	tg.receive(t, sms("+15550100001", "Alex: routine"))
	tg.clock.Advance(time.Minute)
	mms := sms("+15550100002", "Blair: a photo")
	mms.Attachments = []envelope.Attachment{{Name: "scan.jpg", Type: "image/jpeg", Size: 120 << 10}}
	tg.receive(t, mms)
	tg.clock.Advance(time.Minute)
	broken := email("casey@example.org", "Notes", "Casey: what could be read")
	broken.Notes = []string{"broken MIME: the second part could not be read"}
	tg.receive(t, broken)
	tg.clock.Advance(time.Minute)
	tg.receive(t, sms("+15550100001", "Alex: i want to end my life"))
	// An ack that failed since the last check-in.
	tg.store.db.Exec(`UPDATE outbox SET state = 'failed', error_code = '21610', error = 'recipient opted out' WHERE id = 1`)

	tg.clock.Set(time.Date(2026, 11, 18, 10, 0, 0, 0, newYork))
	id, err := tg.g.CheckIn(ctx, tg.clock.Now(), false)
	if err != nil || id == 0 {
		t.Fatalf("CheckIn = %d, %v", id, err)
	}
	subject, text, html := digestMail(t, tg.store)
	if want := "Check-in: 5 messages from 3 clients, 1 urgent, 1 failed delivery"; subject != want {
		t.Fatalf("subject %q, want %q", subject, want)
	}
	// Alex (urgent) first, urgent message first; then Blair (oldest), then Casey.
	order := []string{"== Alex -- URGENT", "i want to end my life", "Alex: routine",
		"Blair: oldest routine", "Blair: a photo", "Attachment: scan.jpg (image/jpeg, 120 KB)",
		"== Unknown sender (client 3)", "Subject: Notes", "Note: broken MIME", "Deliveries that failed", "acknowledgement to client 2 by text", "recipient opted out (21610)"}
	last := -1
	for _, s := range order {
		i := strings.Index(strings.ToLower(text), strings.ToLower(s))
		if i < 0 {
			t.Fatalf("digest lacks %q:\n%s", s, text)
		}
		if i < last {
			t.Fatalf("%q out of order:\n%s", s, text)
		}
		last = i
	}
	if !strings.Contains(text, "Wed 18 Nov") && !strings.Contains(text, "Mon 16 Nov 14:0") {
		t.Fatalf("digest shows no local times:\n%s", text)
	}
	for _, s := range []string{"scan.jpg", "i want to end my life", `name="viewport"`} {
		if !strings.Contains(html, s) {
			t.Fatalf("HTML lacks %q", s)
		}
	}
	// Claimed: a second check-in has nothing new to send.
	tg.clock.Advance(time.Hour)
	if id, err := tg.g.CheckIn(ctx, tg.clock.Now(), true); err != nil || id != 0 {
		t.Fatalf("second check-in = %d, %v; want nothing", id, err)
	}
}

func TestDigestHTMLEscapesClientText(t *testing.T) {
	tg := newTestGateway(t, "none")
	tg.receive(t, sms("+15550100001", `<script>alert("x")</script> & more`))
	tg.g.CheckIn(context.Background(), tg.clock.Now(), true)
	_, _, html := digestMail(t, tg.store)
	if strings.Contains(html, "<script>") || !strings.Contains(html, "&lt;script&gt;") {
		t.Fatalf("client text not escaped in HTML")
	}
}

func TestEmptyCheckinSendsNothing(t *testing.T) {
	tg := newTestGateway(t, "none")
	ctx := context.Background()
	if id, err := tg.g.CheckIn(ctx, tg.clock.Now(), false); err != nil || id != 0 {
		t.Fatalf("empty check-in = %d, %v", id, err)
	}
	last, _ := tg.store.LastCheckin(ctx)
	if !last.Equal(tg.clock.Now()) {
		t.Fatalf("last check-in %v, want it recorded", last)
	}
	tg.g.Practice.EmptyDigest = true
	if id, _ := tg.g.CheckIn(ctx, tg.clock.Now().Add(time.Hour), false); id == 0 {
		t.Fatal("send_empty: no digest")
	}
	if subject, _, _ := digestMail(t, tg.store); subject != "Check-in: 0 messages from 0 clients" {
		t.Fatalf("subject %q", subject)
	}
}

func TestCheckinIdempotent(t *testing.T) {
	tg := newTestGateway(t, "none")
	ctx := context.Background()
	tg.receive(t, sms("+15550100001", "hello"))
	at := time.Date(2026, 11, 18, 10, 0, 0, 0, newYork)
	first, _ := tg.g.CheckIn(ctx, at, false)
	tg.receive(t, sms("+15550100001", "after"))
	again, err := tg.g.CheckIn(ctx, at, false)
	if err != nil || first == 0 || again != 0 {
		t.Fatalf("check-ins %d then %d (%v); want one digest", first, again, err)
	}
}

func TestDigestDeliveredOnlyWhenSent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      error
		wantState string
		wantMsgs  string
	}{
		{"accepted", nil, "sent", "delivered"},
		{"refused", envelope.Permanent("550 5.1.1", "smtp refused"), "failed", "held"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTestGateway(t, "none")
			ctx := context.Background()
			tg.receive(t, sms("+15550100001", "hello"))
			tg.store.db.Exec(`UPDATE outbox SET state = 'sent'`) // the ack is done
			id, _ := tg.g.CheckIn(ctx, tg.clock.Now(), false)
			f := &fakeSender{fn: func(int, envelope.Outbound) error { return tc.fail }}
			o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.Email: f})
			if err := o.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if st, _ := tg.store.DigestState(ctx, id); st != tc.wantState {
				t.Fatalf("digest %s, want %s", st, tc.wantState)
			}
			var state string
			var digest *int64
			tg.store.db.QueryRow(`SELECT state, digest_id FROM messages`).Scan(&state, &digest)
			if state != tc.wantMsgs {
				t.Fatalf("message %s, want %s", state, tc.wantMsgs)
			}
			if tc.fail != nil {
				if digest != nil {
					t.Fatal("message still tied to the failed digest")
				}
				// The next check-in carries it again.
				tg.clock.Advance(time.Hour)
				if id, _ := tg.g.CheckIn(ctx, tg.clock.Now(), false); id == 0 {
					t.Fatal("held message not in the next digest")
				}
			}
		})
	}
}

func TestPurgeDeletesOldDeliveredMessages(t *testing.T) {
	tg := newTestGateway(t, "none")
	ctx := context.Background()
	tg.receive(t, sms("+15550100001", "old"))
	tg.store.db.Exec(`UPDATE outbox SET state = 'sent'`)
	id, _ := tg.g.CheckIn(ctx, tg.clock.Now(), true)
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.Email: &fakeSender{}})
	o.Flush(ctx)
	tg.receive(t, sms("+15550100001", "still held"))
	n, err := tg.store.Purge(ctx, tg.clock.Now().Add(time.Minute))
	if err != nil || n != 1 || id == 0 {
		t.Fatalf("purged %d (%v), want 1", n, err)
	}
	if c := count(t, tg.store, `SELECT count(*) FROM messages WHERE body = 'still held'`); c != 1 {
		t.Fatal("purged a held message")
	}
}

// BenchmarkReceive measures durable Receive throughput on a real file with
// parallel callers, and reports p99 latency.
func BenchmarkReceive(b *testing.B) {
	tg := newTestGateway(b, "brief")
	tg.store.Now = time.Now
	ctx := context.Background()
	var lat latencies
	b.SetParallelism(8) // 8 × GOMAXPROCS callers, like concurrent webhooks
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		i := 0
		for pb.Next() {
			i++
			in := sms(fmt.Sprintf("+1555%07d", i%500), "can we move Tuesday to Thursday afternoon?")
			start := time.Now()
			if _, err := tg.d.Receive(ctx, in); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		lat.add(mine)
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(lat.p(0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkDigest10k measures one check-in over 10,000 held messages.
func BenchmarkDigest10k(b *testing.B) {
	tg := newTestGateway(b, "none")
	ctx := context.Background()
	round := 0
	fill := func() {
		round++
		err := tg.store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
			for i := range 10000 {
				_, err := tx.ExecContext(ctx, `
					INSERT INTO messages (client_id, channel, provider_id, received_at, stored_at, body, state, action)
					VALUES (?, 'sms', ?, ?, ?, ?, 'held', 'ack')`,
					1+i%200, fmt.Sprintf("B%d-%d", round, i), fmtTime(now), fmtTime(now),
					strings.Repeat("a realistic message of some length ", 8))
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for i := range 200 {
		tg.store.UpsertClient(ctx, fmt.Sprintf("Client%d", i), []ClientAddress{{envelope.SMS, fmt.Sprintf("+1555%07d", i)}})
	}
	var peak uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fill()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		id, err := tg.g.CheckIn(ctx, time.Now().Add(time.Duration(i)*time.Hour), true)
		b.StopTimer()
		if err != nil || id == 0 {
			b.Fatal(err)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		peak = max(peak, after.TotalAlloc-before.TotalAlloc)
		tg.store.db.Exec(`UPDATE messages SET state = 'delivered'`)
	}
	b.ReportMetric(float64(peak)/(1<<20), "alloc-MB")
}
