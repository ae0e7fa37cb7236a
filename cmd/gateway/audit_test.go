package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

func TestAudit(t *testing.T) {
	t.Parallel()
	tm := mustRunMain(t)
	tm.receive(t, envelope.Inbound{Channel: envelope.SMS, From: clientPhoneAsIs, Text: "I had a rough night with the harpsichord"})
	tm.receive(t, envelope.Inbound{Channel: envelope.Email, From: emailerFrom, FromName: emailerDisplay,
		Subject: "Tangerine", Text: "the tangerine bus timetable", MessageID: "audit-1@example.org"})
	tm.waitSMS(t, 1)
	tm.checkInDigest(t, 2) // the ack to the emailer and the digest

	// The audit needs no secrets: the config has no Twilio token here.
	conf := filepath.Join(t.TempDir(), "gateway.conf")
	text := fillConfig(tm.Config.Store.Path, "127.0.0.1:0", tm.SMTP.Addr, tm.Twilio.URL, "")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	audit := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append([]string{"audit", "-config", conf}, args...), &out)
		return out.String(), err
	}

	out, err := audit(clientPhoneLocal)
	if err != nil {
		t.Fatal(err)
	}
	// The message's own steps in order; the ack goes out meanwhile.
	if !strings.Contains(out, "acknowledged     ack by text (outbox 1, for msg 1): sent, provider id SM") {
		t.Fatalf("audit lacks the ack:\n%s", out)
	}
	want := []string{"client 1: ", "times in America/New_York", "received         msg 1 by text, action ack",
		"held             msg 1 held for the check-in", "in-digest        msg 1 in digest 1",
		"delivered        msg 1 delivered to the therapist in digest 1"}
	last := -1
	for _, w := range want {
		i := strings.Index(out, w)
		if i < 0 || i < last {
			t.Fatalf("audit lacks %q in order:\n%s", w, out)
		}
		last = i
	}
	for _, leak := range []string{"harpsichord", clientPhone, clientFirstName, "tangerine"} {
		if strings.Contains(out, leak) {
			t.Fatalf("audit without --with-text shows %q:\n%s", leak, out)
		}
	}
	if strings.Count(out, "\n") < 6 {
		t.Fatalf("audit too short:\n%s", out)
	}

	// The same client by id, flags after CLIENT, with the text.
	byID, err := audit("#1", "--with-text")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(byID, "| I had a rough night with the harpsichord") {
		t.Fatalf("--with-text lacks the message:\n%s", byID)
	}

	mail, err := audit("--with-text", "P.Vantongeren@Example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(mail, "client 2: ") || !strings.Contains(mail, "| Subject: Tangerine") ||
		!strings.Contains(mail, "ack by email (outbox 2, for msg 2): sent, Message-ID recorded") {
		t.Fatalf("audit of the emailer:\n%s", mail)
	}

	if _, err := audit("+15550100777"); err == nil || strings.Contains(err.Error(), "0100777") {
		t.Fatalf("unknown number: %v", err)
	}
	if _, err := audit("42"); err == nil || !strings.Contains(err.Error(), "no client 42") {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := audit(); err == nil {
		t.Fatal("no CLIENT accepted")
	}
	if _, err := audit("1", "2"); err == nil {
		t.Fatal("two CLIENTs accepted")
	}
	missing := filepath.Join(t.TempDir(), "gateway.conf")
	os.WriteFile(missing, []byte(strings.Replace(text, tm.Config.Store.Path, filepath.Join(t.TempDir(), "nope.db"), 1)), 0o600)
	var sink bytes.Buffer
	if err := run(t.Context(), []string{"audit", "-config", missing, "1"}, &sink); err == nil {
		t.Fatal("a missing database was not reported")
	}
}
