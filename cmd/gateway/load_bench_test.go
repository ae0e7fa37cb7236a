package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/email/mailtest"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
)

// startBenchGateway runs the whole gateway (webhook, dispatcher, outbox,
// senders) against the loopback stand-ins, logging nothing.
func startBenchGateway(b *testing.B) (*Main, *twiliotest.Server) {
	b.Helper()
	smtpSrv, err := mailtest.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { smtpSrv.Close() })
	tw := twiliotest.Start(demoAccountSID)
	b.Cleanup(tw.Close)
	listen, err := freeLoopbackAddr()
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := demoConfigFor(listen, smtpSrv.Addr, "127.0.0.1:1", tw.URL, filepath.Join(b.TempDir(), "gateway.db"))
	if err != nil {
		b.Fatal(err)
	}
	cfg.Outbox.Concurrency = 16
	cfg.Email.Enabled = false // SMS load only
	m := &Main{Config: cfg}
	if err := m.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	m.Start(context.Background())
	b.Cleanup(func() { m.Close() })
	return m, tw
}

func benchLoad(m *Main) loadConfig {
	u := m.Config.HTTP.PublicURL + "/twilio/sms"
	return loadConfig{URL: u, Account: m.Config.SMS.AccountSID, Token: m.Config.SMS.AuthToken, C: 16, MaxTime: 5 * time.Minute}
}

// BenchmarkWebhookLoad posts b.N signed webhooks with 16 concurrent
// senders, each from its own number (so each gets an acknowledgement).
func BenchmarkWebhookLoad(b *testing.B) {
	m, _ := startBenchGateway(b)
	cfg := benchLoad(m)
	cfg.N = b.N
	b.ResetTimer()
	res, err := runLoad(context.Background(), cfg)
	b.StopTimer()
	if err != nil || res.OK != res.Sent {
		b.Fatalf("%v: %v", err, res)
	}
	b.ReportMetric(float64(res.Sent)/res.Elapsed.Seconds(), "webhooks/s")
	b.ReportMetric(float64(res.quantile(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(res.quantile(0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkUrgentPageUnderLoad measures, while routine webhooks arrive at
// 500/s, the time from an urgent webhook's arrival to the on-call SMS
// request reaching the Twilio stand-in.
func BenchmarkUrgentPageUnderLoad(b *testing.B) {
	m, tw := startBenchGateway(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bg := benchLoad(m)
	bg.N, bg.Rate = 1_000_000, 500
	loadDone := make(chan loadResult, 1)
	go func() { r, _ := runLoad(ctx, bg); loadDone <- r }()
	time.Sleep(500 * time.Millisecond) // let the load settle

	onCall := m.Config.PracticeInfo().OnCall[0].Phone
	signed := m.Config.HTTP.PublicURL + "/twilio/sms"
	var lat []time.Duration
	seen := 0
	b.ResetTimer()
	for i := range b.N {
		form := url.Values{"AccountSid": {m.Config.SMS.AccountSID}, "MessageSid": {fmt.Sprintf("SMurgent%026d", i)},
			"From": {"+15550100001"}, "To": {m.Config.SMS.From}, "NumMedia": {"0"},
			"Body": {"i cant do this anymore, i want to kill myself tonight"}}
		req, _ := http.NewRequest(http.MethodPost, signed, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", twilioSignature(m.Config.SMS.AuthToken, signed, form))
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("urgent webhook: %v %v", err, resp)
		}
		resp.Body.Close()
		for {
			n := 0
			for _, msg := range tw.Messages() {
				if msg.To == onCall {
					n++
				}
			}
			if n > seen {
				seen = n
				break
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatal("no on-call page within 10 s")
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	cancel()
	bgRes := <-loadDone
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "page-p99-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "page-p50-ms")
	b.ReportMetric(float64(bgRes.Sent)/bgRes.Elapsed.Seconds(), "routine/s")
}
