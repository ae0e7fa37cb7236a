package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// postTwilio posts a signed form to path as Twilio would. The gateway is
// reached on its listen address but checks the signature against its
// public URL, as behind a TLS proxy.
func postTwilio(t *testing.T, tm *testMain, path string, form url.Values) int {
	t.Helper()
	signed := tm.Config.HTTP.PublicURL + path
	req, _ := http.NewRequest(http.MethodPost, "http://"+tm.Addr()+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twilioSignature(testAuthToken, signed, form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSMSStoryThroughServe: signed webhook → ack request at the Twilio
// stand-in → status callback reports it undelivered → a message that
// arrived while the webhook was down is reconciled once → the digest lists
// both messages and the failed ack.
func TestSMSStoryThroughServe(t *testing.T) {
	t.Parallel()
	tm := mustRunMain(t)
	ctx := context.Background()
	inbound := url.Values{"AccountSid": {testAccountSID}, "MessageSid": {"SM11111111111111111111111111111111"},
		"From": {"(555) 010-0123"}, "To": {"+15550100000"}, "Body": {"Could we talk about the weekend?"}, "NumMedia": {"0"}}
	for range 2 { // a retried delivery is answered and stored once
		if code := postTwilio(t, tm, "/twilio/sms", inbound); code != http.StatusOK {
			t.Fatalf("webhook answered %d", code)
		}
	}
	acks := tm.waitSMS(t, 1)
	if acks[0].To != "+15550100123" || !strings.Contains(acks[0].Body, " at ") {
		t.Fatalf("ack %+v", acks[0])
	}
	// Posted as soon as the ack reached Twilio, possibly before our outbox
	// recorded its SID: the report must still count.
	status := url.Values{"AccountSid": {testAccountSID}, "MessageSid": {acks[0].SID}, "MessageStatus": {"undelivered"},
		"ErrorCode": {"30003"}, "To": {acks[0].To}, "From": {"+15550100000"}}
	if code := postTwilio(t, tm, "/twilio/status", status); code != http.StatusNoContent {
		t.Fatalf("status callback answered %d", code)
	}
	// Unsigned requests are refused and change nothing.
	req, _ := http.NewRequest(http.MethodPost, "http://"+tm.Addr()+"/twilio/sms", strings.NewReader(inbound.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned webhook: %v %v", resp, err)
	}

	missed := twiliotest.Message{SID: "SM22222222222222222222222222222222", AccountSID: testAccountSID,
		From: "+15550100456", To: "+15550100000", Body: "Sent while you were down"}
	tm.Twilio.AddInbound(missed, time.Now().Add(-time.Hour))
	for range 2 {
		if _, err := tm.Reconciler.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := tm.Store.Lookup(ctx, envelope.SMS, envelope.ProviderID(missed.SID)); err != nil || r.Action != "ack" {
		t.Fatalf("reconciled message: %+v, %v", r, err)
	}

	subject, body := tm.checkInDigest(t, 1)
	if subject != "Check-in: 2 messages from 2 clients, 1 failed delivery" {
		t.Fatalf("subject %q", subject)
	}
	for _, want := range []string{"Could we talk about the weekend?", "Sent while you were down", "(30003)"} {
		if strings.Count(body, want) != 1 {
			t.Fatalf("digest should hold %q once:\n%s", want, body)
		}
	}
}
