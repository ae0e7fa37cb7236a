package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTwilioSignatureVectors(t *testing.T) {
	ours, _ := url.ParseQuery("AccountSid=AC00000000000000000000000000000000&Body=Hello%2C+can+we+move+Tuesday%3F" +
		"&From=%2B15551230001&MessageSid=SM00000000000000000000000000000001&NumMedia=0&To=%2B15559870002")
	twilios := url.Values{"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+14158675309"}, "Digits": {"1234"},
		"From": {"+14158675309"}, "To": {"+18005551212"}}
	for _, tc := range []struct {
		token, url string
		form       url.Values
		want       string
	}{
		{"test_auth_token_0123456789abcdef", "https://gateway.example.org/twilio/sms", ours, "+hV9jHA6cWB4b+2QDMEZRgNJU3Q="},
		{"12345", "https://mycompany.com/myapp.php?foo=1&bar=2", twilios, "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
	} {
		if got := twilioSignature(tc.token, tc.url, tc.form); got != tc.want {
			t.Errorf("signature for %s = %s, want %s", tc.url, got, tc.want)
		}
	}
}

func TestLoadRefusesNonLoopback(t *testing.T) {
	for _, u := range []string{"http://10.0.0.5/twilio/sms", "https://example.org/twilio/sms", "ftp://127.0.0.1/"} {
		_, err := runLoad(context.Background(), loadConfig{URL: u, Token: "x", N: 1, C: 1, MaxTime: time.Second})
		if err == nil || !strings.Contains(err.Error(), "-url") {
			t.Errorf("%s: err %v, want a refusal naming -url", u, err)
		}
	}
}

func TestCheckWarnsAboutLongSMSWording(t *testing.T) {
	cfg, err := demoConfigFor("127.0.0.1:8080", "127.0.0.1:2525", "127.0.0.1:1143", "http://127.0.0.1:4010", t.TempDir()+"/g.db")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printCheck(&b, cfg, time.Date(2026, 11, 16, 14, 0, 0, 0, time.UTC))
	if strings.Contains(b.String(), "warning:") {
		t.Fatalf("default wording warned:\n%s", b.String())
	}
	cfg.Wording = map[string]WordingConfig{"sms": {Repeat: "Got it \u2019" + strings.Repeat(" still {{.NextCheckin}}", 8)}}
	b.Reset()
	printCheck(&b, cfg, time.Date(2026, 11, 16, 14, 0, 0, 0, time.UTC))
	if !strings.Contains(b.String(), "warning: wording.sms.repeat is") || !strings.Contains(b.String(), "UCS-2") {
		t.Fatalf("long UCS-2 wording not warned about:\n%s", b.String())
	}
}
