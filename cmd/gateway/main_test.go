package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/therapistinbox/gateway/channels/email/mailtest"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// The fictional Twilio account the tests' stand-in accepts.
const (
	testAccountSID = "ACfedcba9876543210fedcba9876543210"
	testAuthToken  = "fedcba9876543210fedcba9876543210"
)

// Fixture people. Every value here is something the gateway must never log.
const (
	clientFirstName  = "Ottoline"
	clientPhone      = "+15550100123"   // E.164, as the gateway files it
	clientPhoneAsIs  = "(555) 010-0123" // as the client's carrier and the config write it
	clientPhoneLocal = "5550100123"

	emailerDisplay = "Peregrine Vantongeren"
	emailerFrom    = "Peregrine Vantongeren <P.Vantongeren@Example.org>"
	emailerAddr    = "p.vantongeren@example.org"

	onCallPhone  = "+15550100900"
	onCallEmail  = "oncall@example.org"
	therapistTo  = "therapist@example.org"
	practiceFrom = "practice@example.org"
)

// testConfig is the config the tests run on: demo.conf's shape with fixture
// people. {{...}} parts are filled in by fillConfig.
const testConfig = `
[practice]
name = "Harbour Street Counselling"
therapist = "Dr. Maria Rivera"
time_zone = "America/New_York"
digest_to = "` + therapistTo + `"
phone_region = "US"

[checkins]
times = ["Mon 09:00", "Wed 10:00"]

[[clients]]
first_name = "` + clientFirstName + `"
phone = "` + clientPhoneAsIs + `"

[[oncall]]
name = "Dr. Sam Okafor"
phone = "` + onCallPhone + `"
email = "` + onCallEmail + `"
escalate_after = "10m"

[store]
path = "{{DB}}"

[http]
listen = "{{LISTEN}}"
public_url = "http://127.0.0.1:8080"

[outbox]
base_delay = "50ms"
max_delay = "500ms"

[sms]
enabled = true
account_sid = "` + testAccountSID + `"
from = "+15550100000"
api_base = "{{TWILIO}}"
{{SMS_SECRET}}

[email]
address = "` + practiceFrom + `"
from_name = "Harbour Street Counselling"

[email.smtp]
addr = "{{SMTP}}"
security = "none"
`

// Poll intervals and deadlines.
const (
	pollEvery = 10 * time.Millisecond
	waitLong  = 10 * time.Second
)

// fillConfig returns testConfig for the given database, listener and
// stand-ins; smsSecret is an extra line for the [sms] table (or "").
func fillConfig(db, listen, smtpAddr, twilioURL, smsSecret string) string {
	return strings.NewReplacer("{{DB}}", db, "{{LISTEN}}", listen, "{{SMTP}}", smtpAddr,
		"{{TWILIO}}", twilioURL, "{{SMS_SECRET}}", smsSecret).Replace(testConfig)
}

// testEnv gives the secrets ParseConfig reads from the environment, and
// nothing else, so the caller's environment cannot leak in.
func testEnv(k string) string {
	if k == "GATEWAY_TWILIO_AUTH_TOKEN" {
		return testAuthToken
	}
	return ""
}

// syncBuffer is a bytes.Buffer safe for concurrent use: the gateway logs
// from several goroutines while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testMain is a running gateway with its stand-ins and captured log.
type testMain struct {
	*Main
	SMTP   *mailtest.Server
	Twilio *twiliotest.Server
	Log    *syncBuffer
}

// mainOption changes the parsed config before Open.
type mainOption func(*Config)

// mustRunMain starts the SMTP and Twilio stand-ins and a gateway wired to
// them, on loopback with a database in a temp dir, logging JSON at debug
// level into a buffer. Everything is closed when the test ends.
func mustRunMain(t *testing.T, opts ...mainOption) *testMain {
	t.Helper()
	smtpSrv, err := mailtest.Start()
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	t.Cleanup(func() { smtpSrv.Close() })
	twilio := twiliotest.Start(testAccountSID)
	t.Cleanup(twilio.Close)

	text := fillConfig(filepath.Join(t.TempDir(), "gateway.db"), "127.0.0.1:0", smtpSrv.Addr, twilio.URL, "")
	cfg, err := ParseConfig(text, testEnv)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	for _, o := range opts {
		o(cfg)
	}
	logs := &syncBuffer{}
	m := &Main{Config: cfg, Logger: newTestLogger(logs)}
	ctx := t.Context()
	if err := m.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	m.Start(ctx)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testMain{Main: m, SMTP: smtpSrv, Twilio: twilio, Log: logs}
}

// newTestLogger logs everything, debug included, as JSON lines to w: the
// PHI checks must see every level.
func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// receive hands in to the dispatcher with a fresh provider id, as a channel
// adapter would.
func (tm *testMain) receive(t *testing.T, in envelope.Inbound) gateway.Result {
	t.Helper()
	in.ProviderID = envelope.ProviderID(fmt.Sprintf("test-%s-%d", in.Channel, time.Now().UnixNano()))
	in.ReceivedAt = time.Now()
	res, err := tm.Dispatcher.Receive(t.Context(), in)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return res
}

// waitSMS waits until the Twilio stand-in has accepted n texts.
func (tm *testMain) waitSMS(t *testing.T, n int) []twiliotest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	msgs, err := tm.Twilio.Wait(ctx, n)
	if err != nil {
		t.Fatalf("waiting for %d texts: %v", n, err)
	}
	return msgs
}

// checkInDigest runs a check-in by hand, waits until the mail server
// holds mails in all, and returns the one digest sent to the therapist.
func (tm *testMain) checkInDigest(t *testing.T, mails int) (subject, text string) {
	t.Helper()
	id, _ := tm.digestNow(t)
	tm.waitDigestState(t, id, "sent")
	digests := mailsTo(tm.waitMail(t, mails), therapistTo)
	if len(digests) != 1 {
		t.Fatalf("digests: %d, want 1", len(digests))
	}
	return readMail(t, digests[0])
}

// waitMail waits until the SMTP stand-in has accepted n mails.
func (tm *testMain) waitMail(t *testing.T, n int) []mailtest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	msgs, err := tm.SMTP.Wait(ctx, n)
	if err != nil {
		t.Fatalf("waiting for %d mails (have %d): %v", n, len(tm.SMTP.Messages()), err)
	}
	return msgs
}

// waitDigestState polls the store until digest id is in state want.
func (tm *testMain) waitDigestState(t *testing.T, id int64, want string) {
	t.Helper()
	if got, ok := tm.pollDigestState(t, id, want, waitLong); !ok {
		t.Fatalf("digest %d is %q after %v, want %q", id, got, waitLong, want)
	}
}

// pollDigestState polls the store for up to within until digest id is in
// state want, and returns the last state seen.
func (tm *testMain) pollDigestState(t *testing.T, id int64, want string, within time.Duration) (string, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := tm.Store.DigestState(t.Context(), id)
		if err != nil {
			t.Fatalf("DigestState(%d): %v", id, err)
		}
		if got == want {
			return got, true
		}
		if time.Now().After(deadline) {
			return got, false
		}
		time.Sleep(pollEvery)
	}
}

// digestNow runs a manual check-in that must produce a digest, and returns
// its id and what DigestNow reported.
func (tm *testMain) digestNow(t *testing.T) (int64, bool) {
	t.Helper()
	id, sent, err := tm.DigestNow(t.Context())
	if err != nil {
		t.Fatalf("DigestNow: %v", err)
	}
	if id == 0 {
		t.Fatalf("DigestNow made no digest; messages should be held")
	}
	return id, sent
}

// logRecords parses the captured log, failing on any line that is not a
// JSON object.
func (tm *testMain) logRecords(t *testing.T) []map[string]any {
	t.Helper()
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(tm.Log.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, sc.Text())
		}
		recs = append(recs, r)
	}
	return recs
}

// waitLog polls the log until a record has every given attribute value.
func (tm *testMain) waitLog(t *testing.T, attrs map[string]string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		for _, r := range tm.logRecords(t) {
			match := true
			for k, v := range attrs {
				if fmt.Sprint(r[k]) != v {
					match = false
					break
				}
			}
			if match {
				return
			}
		}
		time.Sleep(pollEvery)
	}
	t.Fatalf("no log record with %v within %v; log:\n%s", attrs, waitLong, tm.Log.String())
}

// assertLogClean fails if any needle appears, case-insensitively, in the
// raw log or in any decoded key or value of its records.
func (tm *testMain) assertLogClean(t *testing.T, what string, needles []string) {
	t.Helper()
	raw := tm.Log.String()
	var decoded strings.Builder
	for _, r := range tm.logRecords(t) {
		appendStrings(&decoded, r)
	}
	hay := strings.ToLower(raw + "\n" + decoded.String())
	for _, n := range needles {
		if strings.Contains(hay, strings.ToLower(n)) {
			t.Errorf("log contains %s %q:\n%s", what, n, linesWith(raw, n))
		}
	}
}

// appendStrings writes every key and string value in v to b, one a line.
func appendStrings(b *strings.Builder, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			b.WriteString(k + "\n")
			appendStrings(b, e)
		}
	case []any:
		for _, e := range v {
			appendStrings(b, e)
		}
	default:
		fmt.Fprintln(b, v)
	}
}

// linesWith returns the lines of s that contain needle, case-insensitively.
func linesWith(s, needle string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), strings.ToLower(needle)) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "(only after JSON decoding)"
	}
	return strings.Join(out, "\n")
}

// readMail returns a captured mail's subject and its text/plain part,
// decoded.
func readMail(t *testing.T, msg mailtest.Message) (subject, text string) {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(msg.Data))
	if err != nil {
		t.Fatalf("unreadable mail: %v", err)
	}
	if subject, err = r.Header.Subject(); err != nil {
		t.Fatalf("mail subject: %v", err)
	}
	for {
		p, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("mail part: %v", err)
		}
		if h, ok := p.Header.(*mail.InlineHeader); ok {
			if ct, _, _ := h.ContentType(); ct == "text/plain" {
				b, err := io.ReadAll(p.Body)
				if err != nil {
					t.Fatalf("mail body: %v", err)
				}
				return subject, string(b)
			}
		}
	}
	t.Fatalf("mail to %v has no text/plain part", msg.To)
	return "", ""
}

// mailsTo returns the captured mails whose first recipient is to.
func mailsTo(msgs []mailtest.Message, to string) []mailtest.Message {
	var out []mailtest.Message
	for _, m := range msgs {
		if len(m.To) > 0 && m.To[0] == to {
			out = append(out, m)
		}
	}
	return out
}

// textsTo returns the captured texts sent to to.
func textsTo(msgs []twiliotest.Message, to string) []twiliotest.Message {
	var out []twiliotest.Message
	for _, m := range msgs {
		if m.To == to {
			out = append(out, m)
		}
	}
	return out
}

// The story's messages. Each carries words no log line could contain by
// chance.
var (
	storyRoutine = envelope.Inbound{Channel: envelope.SMS, From: clientPhoneAsIs,
		Text: "Hi, I keep thinking about the lighthouse dream from our session. Can we talk about it next time?"}
	storyRepeat = envelope.Inbound{Channel: envelope.SMS, From: clientPhone,
		Text: "Also my aunt Wilhelmina phoned about the marzipan shop again."}
	storyEmail = envelope.Inbound{Channel: envelope.Email, From: emailerFrom, FromName: emailerDisplay,
		Subject: "Rescheduling the quince appointment", MessageID: "k7q2x9@mail.example.net",
		Text: "Hello, could we move next week's appointment to Thursday afternoon? The tangerine bus timetable changed.\n\nThanks,\nPeregrine"}
	storyUrgent = envelope.Inbound{Channel: envelope.SMS, From: clientPhone,
		Text: "i cant keep myself safe tonight. been counting my pills beside the harpsichord"}

	// storyWords are distinctive words of the story's texts and subject.
	storyWords = []string{"lighthouse dream", "lighthouse", "Wilhelmina", "marzipan", "quince",
		"tangerine", "timetable", "harpsichord", "counting my pills", "keep myself safe"}
)

func TestStoryLogsNoClientContent(t *testing.T) {
	t.Parallel()
	tm := mustRunMain(t)
	// One 503 from Twilio, so a retry (and its error) is logged too.
	tm.Twilio.Fail(503, "<html><body>Service Unavailable</body></html>")

	steps := []struct {
		in   envelope.Inbound
		want string
	}{
		{storyRoutine, gateway.ActionAck},
		{storyRepeat, gateway.ActionQuiet},
		{storyEmail, gateway.ActionAck},
		{storyUrgent, gateway.ActionUrgent},
	}
	for i, s := range steps {
		if got := tm.receive(t, s.in).Action; got != s.want {
			t.Fatalf("step %d: action %q, want %q", i+1, got, s.want)
		}
	}

	// Texts: the ack and the crisis reply to the client, the page to on-call.
	texts := tm.waitSMS(t, 3)
	// The ack met a 503 and was retried, so the order is not fixed.
	toClient := textsTo(texts, clientPhone)
	var acks, replies int
	for _, m := range toClient {
		switch {
		case strings.HasPrefix(m.Body, "Hi "+clientFirstName+", thanks"):
			acks++
			if !strings.Contains(m.Body, "I'll read it ") {
				t.Errorf("client ack = %q, want it to name the check-in", m.Body)
			}
		case strings.HasPrefix(m.Body, clientFirstName+", if you are in immediate danger"):
			replies++
			if !strings.Contains(m.Body, "988") || !strings.Contains(m.Body, "911") {
				t.Errorf("urgent reply = %q, want the crisis line and emergency number", m.Body)
			}
		}
	}
	if len(toClient) != 2 || acks != 1 || replies != 1 {
		t.Fatalf("texts to the client: %+v; want one ack and one urgent reply (the repeat is quiet)", toClient)
	}
	for _, m := range toClient {
		for _, w := range storyWords {
			if strings.Contains(strings.ToLower(m.Body), strings.ToLower(w)) {
				t.Errorf("reply to the client echoes %q: %q", w, m.Body)
			}
		}
	}
	pages := textsTo(texts, onCallPhone)
	if len(pages) != 1 || !strings.HasPrefix(pages[0].Body, "URGENT #") || !strings.Contains(pages[0].Body, "harpsichord") {
		t.Fatalf("on-call texts = %+v, want one URGENT page quoting the message", pages)
	}

	// Mail: the ack to the unknown emailer, the page to on-call.
	mails := tm.waitMail(t, 2)
	if got := mailsTo(mails, emailerAddr); len(got) != 1 {
		t.Fatalf("mails to the emailer: %d, want 1", len(got))
	} else if subj, body := readMail(t, got[0]); subj != "Re: "+storyEmail.Subject || !strings.Contains(body, "will be read ") {
		t.Errorf("emailer ack (unknown sender): subject %q, body %q; want a threaded reply naming the check-in", subj, body)
	}
	if got := mailsTo(mails, onCallEmail); len(got) != 1 {
		t.Fatalf("mails to on-call: %d, want 1", len(got))
	} else if subj, body := readMail(t, got[0]); !strings.HasPrefix(subj, "URGENT #") || !strings.Contains(body, storyUrgent.Text) {
		t.Errorf("on-call mail: subject %q, body %q", subj, body)
	}

	// The check-in: one digest to the therapist with all four messages.
	subj, body := tm.checkInDigest(t, 3)
	if want := "Check-in: 4 messages from 2 clients, 1 urgent"; subj != want {
		t.Errorf("digest subject = %q, want %q", subj, want)
	}
	for _, in := range []envelope.Inbound{storyRoutine, storyRepeat, storyUrgent} {
		if !strings.Contains(body, in.Text) {
			t.Errorf("digest lacks %q:\n%s", in.Text, body)
		}
	}
	if !strings.Contains(body, "tangerine bus timetable") || !strings.Contains(body, storyEmail.Subject) {
		t.Errorf("digest lacks the email:\n%s", body)
	}
	if n := len(tm.Twilio.Messages()); n != 3 {
		t.Errorf("texts sent: %d, want 3", n)
	}

	// Close first, so shutdown is logged too and nothing writes meanwhile.
	if err := tm.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(tm.logRecords(t)) == 0 {
		t.Fatal("the gateway logged nothing; the checks below would prove nothing")
	}
	tm.waitLog(t, map[string]string{"msg": "outbox retry", "channel": "sms"}) // whichever text met the 503
	tm.assertLogClean(t, "a client's phone number", []string{clientPhone, clientPhoneAsIs, clientPhoneLocal, "010-0123"})
	tm.assertLogClean(t, "a client's email address", []string{emailerAddr, "P.Vantongeren@Example.org", "vantongeren"})
	tm.assertLogClean(t, "a client's name", []string{clientFirstName, emailerDisplay, "Peregrine"})
	tm.assertLogClean(t, "message content", storyWords)
	tm.assertLogClean(t, "a staff contact", []string{onCallPhone, onCallEmail, therapistTo})
}

// holdTwo files two routine texts from the client and waits for their
// single acknowledgement, so the outbox is idle afterwards.
func holdTwo(t *testing.T, tm *testMain) {
	t.Helper()
	tm.receive(t, storyRoutine)
	tm.receive(t, storyRepeat)
	tm.waitSMS(t, 1)
}

// assertDigestHolds checks that a captured digest lists both held texts.
func assertDigestHolds(t *testing.T, msg mailtest.Message) {
	t.Helper()
	subj, body := readMail(t, msg)
	if want := "Check-in: 2 messages from 1 client"; subj != want {
		t.Errorf("digest subject = %q, want %q", subj, want)
	}
	for _, in := range []envelope.Inbound{storyRoutine, storyRepeat} {
		if !strings.Contains(body, in.Text) {
			t.Errorf("digest lacks %q:\n%s", in.Text, body)
		}
	}
}

func TestDigestNotDeliveredWhenSMTPRefuses(t *testing.T) {
	t.Parallel()
	t.Run("permanent 550", func(t *testing.T) {
		t.Parallel()
		tm := mustRunMain(t)
		holdTwo(t, tm)

		tm.SMTP.Reject(550)
		id, sent, err := tm.DigestNow(t.Context())
		if err != nil || id == 0 || sent {
			t.Fatalf("DigestNow = %d, %v, %v; want a digest, not sent, no error", id, sent, err)
		}
		// Its messages go back to the queue once the failure is recorded.
		tm.waitDigestState(t, id, "failed")
		if n := len(tm.SMTP.Messages()); n != 0 {
			t.Fatalf("SMTP stand-in accepted %d mails while refusing", n)
		}

		tm.SMTP.Reject(0)
		id2, _ := tm.digestNow(t)
		if id2 == id {
			t.Fatalf("second check-in reused digest %d", id)
		}
		tm.waitDigestState(t, id2, "sent")
		mails := tm.waitMail(t, 1)
		if len(mails) != 1 || mails[0].To[0] != therapistTo {
			t.Fatalf("mails = %d (first to %v), want the one digest", len(mails), mails[0].To)
		}
		assertDigestHolds(t, mails[0])

		// Delivered now: a third check-in has nothing to send.
		if id3, sent, err := tm.DigestNow(t.Context()); id3 != 0 || sent || err != nil {
			t.Fatalf("third DigestNow = %d, %v, %v; want 0, false, nil (messages delivered)", id3, sent, err)
		}
		tm.assertLogClean(t, "the refused recipient", []string{therapistTo, "rejected by mailtest"})
	})

	// A scheduled check-in: the runner calls CheckIn and the running outbox
	// alone delivers the digest.
	t.Run("transient 451 at a scheduled check-in", func(t *testing.T) {
		t.Parallel()
		tm := mustRunMain(t)
		holdTwo(t, tm)

		tm.SMTP.Reject(451)
		id, err := tm.Digester.CheckIn(t.Context(), time.Now(), false)
		if err != nil || id == 0 {
			t.Fatalf("CheckIn = %d, %v; want a digest", id, err)
		}
		assertRetriedThenSent(t, tm, id)
	})

	t.Run("transient 451 via DigestNow", func(t *testing.T) {
		t.Parallel()
		tm := mustRunMain(t)
		holdTwo(t, tm)

		tm.SMTP.Reject(451)
		id, sent, err := tm.DigestNow(t.Context())
		if err != nil || id == 0 || sent {
			t.Fatalf("DigestNow = %d, %v, %v; want a digest, not sent, no error", id, sent, err)
		}
		assertRetriedThenSent(t, tm, id)
	})
}

// assertRetriedThenSent checks that digest id, refused with a 451, stays
// pending, and that the running outbox delivers it once the server accepts
// mail again; then that its messages count as delivered.
func assertRetriedThenSent(t *testing.T, tm *testMain, id int64) {
	t.Helper()
	tm.waitLog(t, map[string]string{"msg": "outbox retry", "kind": "digest"})
	if state, err := tm.Store.DigestState(t.Context(), id); err != nil || state != "pending" {
		t.Fatalf("digest %d after a 451: %q, %v; want pending", id, state, err)
	}
	if n := len(tm.SMTP.Messages()); n != 0 {
		t.Fatalf("SMTP stand-in accepted %d mails while refusing", n)
	}

	tm.SMTP.Reject(0)
	// The backoff is capped at max_delay (500ms): a retry is due well within this.
	if state, ok := tm.pollDigestState(t, id, "sent", waitLong); !ok {
		t.Fatalf("digest %d still %q after the server accepts again; the retry is due within max_delay (500ms)", id, state)
	}
	mails := tm.waitMail(t, 1)
	assertDigestHolds(t, mails[0])
	if id2, sent, err := tm.DigestNow(t.Context()); id2 != 0 || sent || err != nil {
		t.Fatalf("next DigestNow = %d, %v, %v; want 0, false, nil (messages delivered)", id2, sent, err)
	}
	if n := len(tm.SMTP.Messages()); n != 1 {
		t.Errorf("SMTP stand-in has %d mails, want the one digest", n)
	}
	tm.assertLogClean(t, "the refused recipient", []string{therapistTo, "rejected by mailtest"})
}

// TestDigestNowReportsSent checks that DigestNow, with the daemon running,
// says "sent" when the mail server accepted the digest.
func TestDigestNowReportsSent(t *testing.T) {
	t.Parallel()
	tm := mustRunMain(t)
	for i := range 5 {
		tm.receive(t, storyRoutine)
		id, sent := tm.digestNow(t)
		tm.waitDigestState(t, id, "sent")
		if !sent {
			t.Fatalf("check-in %d: DigestNow said not sent for digest %d, which the mail server accepted", i+1, id)
		}
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	t.Parallel()
	tm := mustRunMain(t)
	base := "http://" + tm.Addr()

	var h struct {
		Status, Store, Outbox, Checkins string
		NextCheckin                     time.Time `json:"next_checkin"`
	}
	resp := waitHealthy(t, base)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("healthz Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(resp.Body, &h); err != nil {
		t.Fatalf("healthz body %q: %v", resp.Body, err)
	}
	if h.Status != "ok" || h.Store != "ok" || h.Outbox != "ok" || h.Checkins != "ok" {
		t.Errorf("healthz = %+v, want everything ok", h)
	}
	if !h.NextCheckin.After(time.Now()) {
		t.Errorf("healthz next_checkin = %v, want a time ahead", h.NextCheckin)
	}

	tm.receive(t, storyRoutine)
	tm.waitSMS(t, 1)
	// The ack counts as sent just after the stand-in accepts it.
	metrics := waitMetric(t, base, regexp.MustCompile(`(?m)^gateway_outbox_sent_total\{channel="sms",kind="ack"\} 1$`))
	for _, re := range []string{
		`(?m)^gateway_messages_received_total\{action="ack",channel="sms",verdict="routine"\} 1$`,
		`(?m)^gateway_outbox_pending 0$`,
		`(?m)^gateway_ack_latency_seconds_count \d+$`,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("metrics lack %s:\n%s", re, gatewayLines(metrics))
		}
	}

	// The urgent path: the page's latency is observed.
	tm.receive(t, storyUrgent)
	waitMetric(t, base, regexp.MustCompile(`(?s)gateway_alert_latency_seconds_count 2\n.*`+
		`gateway_messages_received_total\{action="urgent",channel="sms",verdict="urgent"\} 1\n`))

	t.Run("ack latency observed", func(t *testing.T) {
		re := regexp.MustCompile(`(?m)^gateway_ack_latency_seconds_count [1-9]`)
		deadline := time.Now().Add(waitLong)
		for {
			r, err := get(base + "/metrics")
			if err != nil {
				t.Fatalf("GET /metrics: %v", err)
			}
			if re.Match(r.Body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("acks were sent but gateway_ack_latency_seconds observed none:\n%s", gatewayLines(string(r.Body)))
			}
			time.Sleep(pollEvery)
		}
	})
}

// httpResult is a finished HTTP exchange.
type httpResult struct {
	Status int
	Header http.Header
	Body   []byte
}

var testClient = &http.Client{Timeout: 5 * time.Second}

func get(url string) (httpResult, error) {
	resp, err := testClient.Get(url)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{resp.StatusCode, resp.Header, b}, err
}

// waitHealthy polls /healthz until it answers 200.
func waitHealthy(t *testing.T, base string) httpResult {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var last string
	for time.Now().Before(deadline) {
		r, err := get(base + "/healthz")
		if err == nil && r.Status == http.StatusOK {
			return r
		}
		last = fmt.Sprintf("%d %s %v", r.Status, r.Body, err)
		time.Sleep(pollEvery)
	}
	t.Fatalf("%s/healthz not 200 within %v; last: %s", base, waitLong, last)
	return httpResult{}
}

// waitMetric polls /metrics until re matches and returns the exposition.
func waitMetric(t *testing.T, base string, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var body string
	for time.Now().Before(deadline) {
		r, err := get(base + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		if r.Status != http.StatusOK {
			t.Fatalf("GET /metrics: %d", r.Status)
		}
		body = string(r.Body)
		if re.MatchString(body) {
			return body
		}
		time.Sleep(pollEvery)
	}
	t.Fatalf("metrics never matched %s:\n%s", re, gatewayLines(body))
	return ""
}

// gatewayLines keeps the gateway's own metrics, for failure messages.
func gatewayLines(exposition string) string {
	var out []string
	for _, l := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(l, "gateway_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServeShutsDownGracefully(t *testing.T) {
	// LoadConfig reads the real environment: keep the caller's out.
	for _, k := range []string{"GATEWAY_DB", "GATEWAY_LISTEN", "GATEWAY_TWILIO_AUTH_TOKEN",
		"GATEWAY_SMTP_PASSWORD", "GATEWAY_IMAP_PASSWORD", "GATEWAY_ADMIN_TOKEN"} {
		t.Setenv(k, "")
	}
	smtpSrv, err := mailtest.Start()
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	t.Cleanup(func() { smtpSrv.Close() })
	twilio := twiliotest.Start(testAccountSID)
	t.Cleanup(twilio.Close)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "twilio-token")
	if err := os.WriteFile(tokenFile, []byte(testAuthToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	conf := fillConfig(filepath.Join(dir, "state", "gateway.db"), addr, smtpSrv.Addr, twilio.URL,
		"auth_token_file = "+strconv.Quote(tokenFile))
	path := filepath.Join(dir, "gateway.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, []string{"serve", "-config", path}, io.Discard) }()

	deadline := time.Now().Add(waitLong)
	for {
		r, err := get("http://" + addr + "/healthz")
		if err == nil && r.Status == http.StatusOK {
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("serve returned before it was healthy: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy on %s within %v: %d %s %v", addr, waitLong, r.Status, r.Body, err)
		}
		time.Sleep(pollEvery)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve still running 5s after cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after serve returned", addr)
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := run(t.Context(), []string{"demo"}, &buf); err != nil {
		t.Fatalf("demo: %v\n%s", err, buf.String())
	}
	out := buf.String()

	sections := []string{"What the clients received", "What the on-call clinician received",
		"What the therapist received at the check-in"}
	at := make([]int, len(sections))
	for i, s := range sections {
		if at[i] = strings.Index(out, s+"\n"+strings.Repeat("=", len(s))+"\n"); at[i] < 0 {
			t.Fatalf("demo output lacks section %q:\n%s", s, out)
		}
	}
	if !slices.IsSorted(at) {
		t.Errorf("demo sections out of order (at %v):\n%s", at, out)
	}
	clients, onCall, therapist := out[at[0]:at[1]], out[at[1]:at[2]], out[at[2]:]

	weekday := `(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)`
	for _, c := range []struct {
		part, name string
		re         string
	}{
		{clients, "an SMS ack naming a weekday check-in",
			`SMS to \+1\d{10} from \+1\d{10}:\nHi Alex, [^\n]*I'll read it ` + weekday + `(, \w+ \d+)? at (\d+(:\d\d)? [ap]\.m\.|noon|midnight)`},
		{onCall, "an URGENT page by SMS", `SMS to \+1\d{10}:\nURGENT #\d+: `},
		{onCall, "an URGENT page by email", `Subject: URGENT #\d+: message from `},
		{therapist, "a digest subject with counts", `Subject: Check-in: \d+ messages? from \d+ clients?, \d+ urgent\n`},
	} {
		if !regexp.MustCompile(c.re).MatchString(c.part) {
			t.Errorf("demo output lacks %s (%s):\n%s", c.name, c.re, c.part)
		}
	}
}
