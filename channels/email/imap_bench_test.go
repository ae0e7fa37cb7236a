package email

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/email/imaptest"
)

// BenchmarkIMAPIdleLatency measures how long a message takes from landing
// in the mailbox (an APPEND by another client, timed from before it is
// sent) to the handler being called by a watcher in IDLE. Each round takes
// over half a second, so ask for samples: -benchtime=50x. Dovecot holds
// IDLE notifications back 500 ms to batch changes (NOTIFY_DELAY_MSECS in
// src/lib-storage/mailbox-watch.c); the rest is the watcher's.
func BenchmarkIMAPIdleLatency(b *testing.B) {
	srv := imaptest.Start(b)
	f := newFixture(b, srv, nil)
	f.run(b)
	f.waitIdle(b)
	app, err := srv.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	uv := srv.UIDValidity(b, "INBOX")

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		raw := testMsg(i+1, "latency")
		start := time.Now()
		cmd := app.Append("INBOX", int64(len(raw)), nil)
		if _, err := cmd.Write(raw); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			b.Fatal(err)
		}
		f.h.waitStored(b, i+1, 10*time.Second)
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if _, err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		// Let the watcher confirm this one and go back to IDLE.
		want := fmt.Sprintf("%d/%d", uv, i+1)
		waitFor(b, 10*time.Second, "the checkpoint", func() bool { return f.cp.get("imap:INBOX") == want })
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(0, "ns/op") // the loop includes waiting; the percentiles are the result
}

// BenchmarkIMAPBacklog measures start-up catch-up: 1,000 messages waiting
// in the mailbox, handled by one Once.
func BenchmarkIMAPBacklog(b *testing.B) {
	const backlog = 1000
	for _, mode := range []struct {
		name   string
		moveTo string
	}{{"seen", ""}, {"move", "Processed"}} {
		b.Run(mode.name, func(b *testing.B) {
			srv := imaptest.Start(b)
			var total int
			var took time.Duration
			for i := range b.N {
				b.StopTimer()
				raws := make([][]byte, backlog)
				for j := range raws {
					raws[j] = testMsg(j+1, fmt.Sprintf("backlog%d", i))
				}
				srv.Append(b, "INBOX", raws...)
				f := newFixture(b, srv, func(c *IMAPConfig) { c.MoveTo = mode.moveTo })
				b.StartTimer()

				start := time.Now()
				n, err := f.w.Once(context.Background())
				took += time.Since(start)
				if err != nil || n != backlog {
					b.Fatalf("Once = %d, %v", n, err)
				}
				total += n
				// Start every round from empty folders: Dovecot's MOVE gets
				// slower as the destination grows.
				b.StopTimer()
				for _, box := range []string{"INBOX", mode.moveTo} {
					if box != "" {
						srv.Doveadm(b, "expunge", "-u", srv.User(), "mailbox", box, "all")
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total)/took.Seconds(), "msgs/s")
		})
	}
}
