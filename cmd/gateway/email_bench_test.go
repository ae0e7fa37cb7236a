package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/email/imaptest"
	"github.com/therapistinbox/gateway/channels/email/mailtest"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// startEmailBench runs a gateway reading a real Dovecot mailbox (IDLE) and
// sending through the in-process SMTP server, whose Wait wakes on the
// exact moment a message is accepted.
func startEmailBench(b *testing.B, imap *imaptest.Server) (*Main, *mailtest.Server) {
	b.Helper()
	smtpSrv, err := mailtest.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { smtpSrv.Close() })
	tw := twiliotest.Start(testAccountSID)
	b.Cleanup(tw.Close)
	cfg, err := ParseConfig(fillConfig(filepath.Join(b.TempDir(), "gateway.db"), "127.0.0.1:0", smtpSrv.Addr, tw.URL, ""), testEnv)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Email.Enabled = true
	cfg.Email.IMAP = MailServer{Addr: imap.Addr(), Security: "starttls", Username: imap.User(), Password: imap.Pass()}
	m := &Main{Config: cfg, IMAPRoots: imap.RootCAs()}
	if err := m.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	m.Start(context.Background())
	b.Cleanup(func() { m.Close() })
	return m, smtpSrv
}

// BenchmarkEmailAckLatency measures, one message at a time, the time from
// a client's mail landing in the mailbox to the gateway's acknowledgement
// being accepted by the SMTP server: IDLE wake-up, fetch, parse, triage,
// commit, outbox, SMTP.
func BenchmarkEmailAckLatency(b *testing.B) {
	imap := imaptest.Start(b)
	_, smtpSrv := startEmailBench(b, imap)
	ctx := context.Background()
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		raw := clientMail(fmt.Sprintf("lat%d@client.example", i), "Hello", "Could we talk on Thursday?")
		start := time.Now()
		imap.Deliver(b, "INBOX", raw)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := smtpSrv.Wait(wctx, i+1)
		cancel()
		if err != nil {
			b.Fatalf("ack %d: %v", i, err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkEmailBacklog measures catching up with 1,000 messages that
// arrived while the gateway was down: from start to the last one filed.
func BenchmarkEmailBacklog(b *testing.B) {
	const n = 1000
	for i := range b.N {
		b.StopTimer()
		imap := imaptest.Start(b)
		raws := make([][]byte, n)
		for j := range raws {
			raws[j] = clientMail(fmt.Sprintf("bl%d-%d@client.example", i, j), "Backlog", "Catching up after the weekend.")
		}
		imap.Append(b, "INBOX", raws...)
		last := envelope.ProviderID(fmt.Sprintf("bl%d-%d@client.example", i, n-1))
		b.StartTimer()
		start := time.Now()
		m, _ := startEmailBench(b, imap)
		for {
			_, err := m.Store.Lookup(context.Background(), envelope.Email, last)
			if err == nil {
				break
			}
			if err != gateway.ErrNotFound || time.Since(start) > 5*time.Minute {
				b.Fatalf("backlog: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(n/time.Since(start).Seconds(), "msgs/s")
	}
}
