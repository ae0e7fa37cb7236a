package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/policies"
)

const (
	anaPhone    = "+15550100001"
	therapistAt = "Dr. Maria Rivera <Therapist@Example.org>"
)

// newRelayGateway is the on-call test gateway with a practice mailbox and
// Ana, a listed client, who has texted once.
func newRelayGateway(t testing.TB) *testGateway {
	t.Helper()
	tg := newOnCallGateway(t)
	tg.setPractice(func(p *Practice) { p.Address = "Rivera Counselling <practice@example.org>" })
	if err := tg.store.UpsertClient(context.Background(), "Ana", []ClientAddress{{envelope.SMS, anaPhone}}); err != nil {
		t.Fatal(err)
	}
	tg.receive(t, sms(anaPhone, "Can we talk about Thursday?"))
	return tg
}

var replyLine = regexp.MustCompile(`Reply to (\S+): write to practice\+r-([a-z2-7]+)@example\.org \(goes to \S+ by (text|email)\)`)

// blair is an email from Blair, a client not on the list.
func blair(subject, text string) envelope.Inbound {
	in := email("Blair <Blair@Example.org>", subject, text)
	in.FromName = "Blair"
	return in
}

// checkInTokens runs a check-in and returns the reply token the digest
// offers for each client, by name.
func checkInTokens(t testing.TB, tg *testGateway) map[string]string {
	t.Helper()
	id, err := tg.g.CheckIn(context.Background(), tg.clock.Now(), true)
	if err != nil || id == 0 {
		t.Fatalf("CheckIn = %d, %v", id, err)
	}
	_, text, _ := digestMail(t, tg.store)
	out := map[string]string{}
	for _, m := range replyLine.FindAllStringSubmatch(text, -1) {
		out[m[1]] = m[2]
	}
	return out
}

// relayMail is the therapist's reply to a reply address.
func relayMail(from, token, text string) envelope.Inbound {
	in := email(from, "Re: your message", text)
	in.RelayToken = token
	return in
}

func rowsOf(t testing.TB, s *Store, kind string) []queued {
	t.Helper()
	var out []queued
	for _, q := range outbox(t, s) {
		if q.Kind == kind {
			out = append(out, q)
		}
	}
	return out
}

func TestRelayTokenRoundTrip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	exp := time.Date(2026, 11, 30, 14, 5, 0, 0, time.UTC)
	for _, tc := range []struct{ client, digest int64 }{{1, 1}, {7, 120}, {5000, 90000}, {0, 0}} {
		tok := relayToken{clientID: tc.client, digestID: tc.digest, expires: exp}.sign(key)
		if tok != strings.ToLower(tok) || strings.ContainsAny(tok, "=+/") {
			t.Fatalf("token %q is not lowercase base32", tok)
		}
		if len(tok) > 40 {
			t.Fatalf("token %q is %d characters", tok, len(tok))
		}
		got, ok := parseRelayToken(key, strings.ToUpper(tok)) // a mail system may change case
		if !ok || got.clientID != tc.client || got.digestID != tc.digest || !got.expires.Equal(exp) {
			t.Fatalf("parse(%q) = %+v, %v", tok, got, ok)
		}
		for i := range tok {
			b := []byte(tok)
			b[i] = map[bool]byte{true: 'b', false: 'a'}[b[i] == 'a']
			if _, ok := parseRelayToken(key, string(b)); ok {
				t.Fatalf("tampered token %q (position %d) accepted", b, i)
			}
		}
		if _, ok := parseRelayToken([]byte("another key, another practice.."), tok); ok {
			t.Fatal("token accepted under another key")
		}
	}
	if tok := (relayToken{clientID: 12, digestID: 40, expires: exp}).sign(key); len(tok) != 26 {
		t.Fatalf("typical token is %d characters, want 26", len(tok))
	}
}

func TestDigestOffersReplyAddress(t *testing.T) {
	tg := newRelayGateway(t)
	tg.receive(t, blair("Sleep & dreams", "<b>hi</b>"))
	tokens := checkInTokens(t, tg)
	if tokens["Ana"] == "" || tokens["Blair"] == "" || tokens["Ana"] == tokens["Blair"] {
		t.Fatalf("reply tokens %v", tokens)
	}
	_, text, html := digestMail(t, tg.store)
	if !strings.Contains(text, "(goes to Ana by text)") || !strings.Contains(text, "(goes to Blair by email)") {
		t.Fatalf("digest does not say how replies go:\n%s", text)
	}
	for _, want := range []string{
		`href="mailto:practice&#43;r-` + tokens["Ana"] + `@example.org?subject=Reply%20to%20Ana%20by%20text"`,
		`href="mailto:practice&#43;r-` + tokens["Blair"] + `@example.org?subject=Re%3A%20Sleep%20%26%20dreams"`,
		"&lt;b&gt;hi&lt;/b&gt;",
	} {
		if !strings.Contains(html, want) {
			t.Fatalf("HTML lacks %s:\n%s", want, html)
		}
	}
}

func TestRelayToSMSClient(t *testing.T) {
	tg := newRelayGateway(t)
	tok := checkInTokens(t, tg)["Ana"]
	before := count(t, tg.store, `SELECT count(*) FROM messages`)
	var logs bytes.Buffer
	tg.d.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := tg.receive(t, relayMail(therapistAt, tok, "Yes, let's start with that on Thursday."))
	if !strings.Contains(logs.String(), `"msg":"relay received"`) {
		t.Fatalf("relay not logged: %s", logs.String())
	}
	for _, leak := range []string{anaPhone, "Ana", "herapist", "Thursday", tok, "mail.example.org"} {
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("log shows %q: %s", leak, logs.String())
		}
	}
	if r.Action != ActionRelay || r.ClientID != 1 || r.RelayID == 0 || r.MessageID != 0 {
		t.Fatalf("relay result %+v", r)
	}
	relays := rowsOf(t, tg.store, "relay")
	if len(relays) != 1 || relays[0].Channel != "sms" || relays[0].To != anaPhone ||
		relays[0].Body != "Yes, let's start with that on Thursday." {
		t.Fatalf("relay rows %+v", relays)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM messages`); n != before {
		t.Fatal("the therapist's reply was filed as a client message")
	}
	if n := count(t, tg.store, `SELECT count(*) FROM client_addresses WHERE channel = 'email'`); n != 0 {
		t.Fatal("the therapist became a client")
	}
	var by, state string
	tg.store.db.QueryRow(`SELECT by_name, state FROM relays WHERE id = ?`, r.RelayID).Scan(&by, &state)
	if by != "Dr. Maria Rivera" || state != "queued" {
		t.Fatalf("relay recorded by %q in state %q", by, state)
	}
}

func TestRelayToEmailClientThreads(t *testing.T) {
	tg := newRelayGateway(t)
	in := blair("Sleep", "I slept badly again.")
	in.References = []string{"first@mail.example.org"}
	tg.receive(t, in)
	tok := checkInTokens(t, tg)["Blair"]
	r := tg.receive(t, relayMail(therapistAt, tok, "Let's look at it together on Monday."))
	if r.Action != ActionRelay {
		t.Fatalf("result %+v", r)
	}
	var to, subject, inReplyTo, refs, name string
	tg.store.db.QueryRow(`SELECT recipient, subject, in_reply_to, refs, recipient_name FROM outbox WHERE kind = 'relay'`).
		Scan(&to, &subject, &inReplyTo, &refs, &name)
	if to != "blair@example.org" || subject != "Re: Sleep" || inReplyTo != in.MessageID || name != "Blair" ||
		refs != `["first@mail.example.org","`+in.MessageID+`"]` {
		t.Fatalf("relay email to %q subject %q in-reply-to %q refs %s name %q", to, subject, inReplyTo, refs, name)
	}
}

func TestRelayRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mail    func(tok string) envelope.Inbound
		advance time.Duration
		reason  string
		to      string // who is told
		says    string
	}{
		{name: "forged sender", reason: refuseSender, to: "therapist@example.org", says: "the sender is not on the practice's list",
			mail: func(tok string) envelope.Inbound {
				return relayMail("Mallory <mallory@example.net>", tok, "Come to my office.")
			}},
		{name: "on-call name from another address", reason: refuseSender, to: "therapist@example.org", says: "not on the practice's list",
			mail: func(tok string) envelope.Inbound { return relayMail("Dana <dana@example.net>", tok, "Hi") }},
		{name: "DMARC fail", reason: refuseAuth, to: "therapist@example.org", says: "could not confirm it came from the address",
			mail: func(tok string) envelope.Inbound {
				in := relayMail(therapistAt, tok, "Hello")
				in.AuthFailed = "dmarc=fail"
				return in
			}},
		{name: "tampered token", reason: refuseBadToken, to: "therapist@example.org", says: "not valid",
			mail: func(tok string) envelope.Inbound {
				b := []byte(tok)
				b[3] = map[bool]byte{true: 'b', false: 'a'}[b[3] == 'a']
				return relayMail(therapistAt, string(b), "Hello")
			}},
		{name: "expired, told to the on-call sender", reason: refuseExpired, advance: 15 * 24 * time.Hour, to: "dana@example.org",
			says: "Not sent to Ana: that reply address has expired (they work for 14 days)",
			mail: func(tok string) envelope.Inbound { return relayMail("Dana <DANA@example.org>", tok, "Hello") }},
		{name: "empty once trimmed", reason: refuseEmpty, to: "therapist@example.org", says: "Not sent to Ana: the reply had no text",
			mail: func(tok string) envelope.Inbound { return relayMail(therapistAt, tok, "  \n ") }},
		{name: "quoted digest left in", reason: refuseQuoted, to: "therapist@example.org", says: "still holds the quoted digest",
			mail: func(tok string) envelope.Inbound {
				return relayMail(therapistAt, tok, "Sure.\n\nOn Mon, practice wrote:\n> Check-in Monday 16 November 2026, 14:00 EST\n> == Blair ==\n> secret")
			}},
		{name: "reply address left in", reason: refuseQuoted, to: "therapist@example.org", says: "still holds the quoted digest",
			mail: func(tok string) envelope.Inbound {
				return relayMail(therapistAt, tok, "Sure.\n> Reply to Blair: write to PRACTICE+r-aaaa@example.org")
			}},
		{name: "automatic mail", reason: refuseAutomated,
			mail: func(tok string) envelope.Inbound {
				in := relayMail(therapistAt, tok, "I am away until Monday.")
				in.Automated = true
				return in
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newRelayGateway(t)
			tok := checkInTokens(t, tg)["Ana"]
			tg.clock.Advance(tc.advance)
			before := len(outbox(t, tg.store))
			r := tg.receive(t, tc.mail(tok))
			if r.Action != ActionRelayRefused || r.MessageID != 0 {
				t.Fatalf("result %+v", r)
			}
			var reason, text string
			tg.store.db.QueryRow(`SELECT reason, text FROM relays WHERE id = ?`, r.RelayID).Scan(&reason, &text)
			if reason != tc.reason || text != "" {
				t.Fatalf("recorded reason %q text %q, want %q and no text", reason, text, tc.reason)
			}
			added := outbox(t, tg.store)[before:]
			if tc.to == "" {
				if len(added) != 0 {
					t.Fatalf("automatic mail answered: %+v", added)
				}
				return
			}
			if len(added) != 1 || added[0].Kind != "notice" || added[0].Channel != "email" || added[0].To != tc.to ||
				!strings.Contains(added[0].Body, tc.says) {
				t.Fatalf("queued %+v, want one notice to %s saying %q", added, tc.to, tc.says)
			}
			if tc.reason == refuseSender || tc.reason == refuseAuth || tc.reason == refuseBadToken {
				if strings.Contains(added[0].Body+added[0].Subject, "Ana") {
					t.Fatalf("explanation names the client: %+v", added[0])
				}
			}
			if n := count(t, tg.store, `SELECT count(*) FROM messages`); n != 1 {
				t.Fatalf("%d messages: the refused mail was filed", n)
			}
		})
	}
}

func TestRefusalNoticesAreCapped(t *testing.T) {
	tg := newRelayGateway(t)
	tok := checkInTokens(t, tg)["Ana"]
	for range 8 {
		tg.receive(t, relayMail("mallory@example.net", tok, "spam"))
	}
	if n := len(rowsOf(t, tg.store, "notice")); n != refusalNoticeLimit {
		t.Fatalf("%d explanations, want %d", n, refusalNoticeLimit)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM relays WHERE state = 'refused'`); n != 8 {
		t.Fatalf("%d refusals recorded, want 8", n)
	}
	tg.clock.Advance(time.Hour)
	tg.receive(t, relayMail("mallory@example.net", tok, "spam"))
	if n := len(rowsOf(t, tg.store, "notice")); n != refusalNoticeLimit+1 {
		t.Fatalf("%d explanations an hour later", n)
	}
}

func TestRelayReplaySentOnce(t *testing.T) {
	tg := newRelayGateway(t)
	tok := checkInTokens(t, tg)["Ana"]
	in := relayMail(therapistAt, tok, "See you Thursday.")
	first := tg.receive(t, in)
	again := tg.receive(t, in)
	if !again.Duplicate || again.RelayID != first.RelayID || again.Action != ActionRelay {
		t.Fatalf("replay %+v, first %+v", again, first)
	}
	if n := len(rowsOf(t, tg.store, "relay")); n != 1 {
		t.Fatalf("%d relay rows after a replay", n)
	}
}

func TestRelayToOptedOutClientRefused(t *testing.T) {
	tg := newRelayGateway(t)
	tok := checkInTokens(t, tg)["Ana"]
	tg.receive(t, sms(anaPhone, "STOP"))
	r := tg.receive(t, relayMail(therapistAt, tok, "See you Thursday."))
	if r.Action != ActionRelayRefused {
		t.Fatalf("result %+v", r)
	}
	if n := len(rowsOf(t, tg.store, "relay")); n != 0 {
		t.Fatal("relay queued to an opted-out number")
	}
	if n := notices(t, tg.store, 0); len(n) != 1 || !strings.Contains(n[0].Body, "Not sent to Ana: they have opted out") {
		t.Fatalf("notices %+v", n)
	}
}

func TestSplitSMS(t *testing.T) {
	sentence := "This is a sentence of moderate length that keeps going for a while. "
	long := strings.Repeat(sentence, 9) // about 630 GSM characters: 5 segments
	parts := splitSMS(long)
	if len(parts) != 3 {
		t.Fatalf("%d parts: %q", len(parts), parts)
	}
	var joined []string
	for i, p := range parts {
		if n, _ := policies.Segments(p); n > relayPartSegments {
			t.Fatalf("part %d takes %d segments", i+1, n)
		}
		prefix := "(" + string(rune('1'+i)) + "/3) "
		if !strings.HasPrefix(p, prefix) || !strings.HasSuffix(p, ".") {
			t.Fatalf("part %d %q is not numbered or not cut at a sentence end", i+1, p)
		}
		joined = append(joined, strings.TrimPrefix(p, prefix))
	}
	if strings.Join(joined, " ") != strings.TrimSpace(long) {
		t.Fatal("parts do not add up to the text")
	}
	// No sentence ends: cut between words. One long word: cut inside it.
	words := strings.Repeat("word ", 200)
	for _, p := range splitSMS(words) {
		if strings.Contains(p, "wor ") || strings.HasSuffix(p, "wor") {
			t.Fatalf("cut inside a word: %q", p)
		}
	}
	link := "https://example.org/" + strings.Repeat("x", 700)
	got := splitSMS(link)
	var rebuilt string
	for i, p := range got {
		if n, _ := policies.Segments(p); n > relayPartSegments {
			t.Fatalf("part %d takes %d segments", i, n)
		}
		_, rest, _ := strings.Cut(p, ") ")
		rebuilt += rest
	}
	if rebuilt != link {
		t.Fatal("a long word lost characters")
	}
	if got := splitSMS("Short and sweet. "); len(got) != 1 || got[0] != "Short and sweet." {
		t.Fatalf("short text split: %q", got)
	}
	// Emoji make the text UCS-2: 67 units a segment.
	emoji := strings.Repeat("Thinking of you 🙂 today. ", 12)
	for _, p := range splitSMS(emoji) {
		if n, enc := policies.Segments(p); n > relayPartSegments || enc != policies.EncodingUCS2 {
			t.Fatalf("UCS-2 part takes %d segments (%s): %q", n, enc, p)
		}
	}
}

func TestLongSMSRelaySentInOrderThenConfirmed(t *testing.T) {
	tg := newRelayGateway(t)
	tok := checkInTokens(t, tg)["Ana"]
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	o.Concurrency = 8
	ctx := context.Background()
	text := strings.Repeat("I have been thinking about what you said on Monday. ", 13) // 676 characters: 5 segments
	if r := tg.receive(t, relayMail(therapistAt, tok, text)); r.Action != ActionRelay {
		t.Fatalf("result %+v", r)
	}
	var parts []string
	for i := 0; len(parts) < 3 && i < 10; i++ {
		if err := o.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		parts = parts[:0]
		for _, m := range f.Sent() {
			if m.Kind == envelope.KindRelay {
				parts = append(parts, m.Text)
			}
		}
		tg.clock.Advance(relayPartGap)
	}
	if len(parts) != 3 {
		t.Fatalf("sent %d parts: %q", len(parts), parts)
	}
	for i, p := range parts {
		if !strings.HasPrefix(p, "("+string(rune('1'+i))+"/3) ") {
			t.Fatalf("part %d out of order: %q", i+1, parts)
		}
	}
	// The next part waits for the one before and for the gap.
	var created []string
	rows, _ := tg.store.db.Query(`SELECT next_attempt_at FROM outbox WHERE kind = 'relay' ORDER BY id`)
	for rows.Next() {
		var s string
		rows.Scan(&s)
		created = append(created, s)
	}
	rows.Close()
	if len(created) != 3 || !(created[0] < created[1] && created[1] < created[2]) {
		t.Fatalf("parts due at %v", created)
	}
	n := notices(t, tg.store, 0)
	if len(n) != 1 || n[0].To != "therapist@example.org" || n[0].Subject != "Reply to Ana: sent" ||
		!strings.Contains(n[0].Body, "Sent to Ana by text, in 3 parts, at ") {
		t.Fatalf("confirmations %+v", n)
	}
	var state string
	tg.store.db.QueryRow(`SELECT state FROM relays`).Scan(&state)
	if state != "sent" {
		t.Fatalf("relay state %q", state)
	}
}

func TestSMSRelayOverLimitRefused(t *testing.T) {
	tg := newRelayGateway(t)
	tg.setPractice(func(p *Practice) { p.RelayMaxSegments = 3 })
	tok := checkInTokens(t, tg)["Ana"]
	r := tg.receive(t, relayMail(therapistAt, tok, strings.Repeat("A long thought that goes on. ", 20)))
	if r.Action != ActionRelayRefused || len(rowsOf(t, tg.store, "relay")) != 0 {
		t.Fatalf("result %+v", r)
	}
	n := notices(t, tg.store, 0)
	if len(n) != 1 || !strings.Contains(n[0].Body, "would take 4 text messages, over the limit of 3") {
		t.Fatalf("notices %+v", n)
	}
}

func TestRelayConfirmations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    error
		subject string
		says    string
	}{
		{"sent", nil, "Reply to Ana: sent", "Sent to Ana by text at 2:00 PM."},
		{"invalid number", envelope.Permanent("21211", "invalid recipient number"), "Reply to Ana: NOT delivered",
			"Not sent to Ana: the number cannot receive texts (error 21211)."},
		{"unsubscribed at Twilio", envelope.Permanent("21610", "recipient unsubscribed (replied STOP)"), "Reply to Ana: NOT delivered",
			"Not sent to Ana: the number has opted out of texts from the practice (STOP)."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newRelayGateway(t)
			tok := checkInTokens(t, tg)["Ana"]
			tg.clock.Set(time.Date(2026, 11, 16, 14, 0, 0, 0, newYork))
			f := &fakeSender{fn: func(_ int, m envelope.Outbound) error {
				if m.Kind == envelope.KindRelay {
					return tc.fail
				}
				return nil
			}}
			o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
			in := relayMail(therapistAt, tok, "See you Thursday.")
			tg.receive(t, in)
			if err := o.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			n := notices(t, tg.store, 0)
			if len(n) != 1 || n[0].Subject != tc.subject || n[0].Body != tc.says || n[0].InReplyTo != in.MessageID {
				t.Fatalf("confirmations %+v", n)
			}
			sent := f.Sent()
			if last := sent[len(sent)-1]; last.Kind != envelope.KindNotice || last.To != "therapist@example.org" {
				t.Fatalf("confirmation not delivered: %+v", last)
			}
		})
	}
}

func TestRelayUndeliveredAfterSentIsReported(t *testing.T) {
	tg := newRelayGateway(t)
	tok := checkInTokens(t, tg)["Ana"]
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	tg.receive(t, relayMail(therapistAt, tok, "See you Thursday."))
	ctx := context.Background()
	o.Flush(ctx)
	var pid string
	tg.store.db.QueryRow(`SELECT provider_id FROM outbox WHERE kind = 'relay'`).Scan(&pid)
	rec := &StatusRecorder{Store: tg.store, Outbox: o}
	if err := rec.HandleStatus(ctx, envelope.Status{Channel: envelope.SMS, ProviderID: envelope.ProviderID(pid),
		State: "undelivered", ErrorCode: "30003"}); err != nil {
		t.Fatal(err)
	}
	n := notices(t, tg.store, 0)
	if len(n) != 2 || n[1].Subject != "Reply to Ana: NOT delivered" ||
		!strings.Contains(n[1].Body, "was not delivered after all: the phone could not be reached (error 30003)") {
		t.Fatalf("notices %+v", n)
	}
	// The next digest shows it under Ana, not among the other failures.
	tg.receive(t, sms(anaPhone, "Did you write?"))
	tg.clock.Advance(time.Hour)
	tg.g.CheckIn(ctx, tg.clock.Now(), true)
	_, text, _ := digestMail(t, tg.store)
	if !strings.Contains(text, "You replied by text: NOT delivered: the phone could not be reached") ||
		strings.Contains(text, "Deliveries that failed") {
		t.Fatalf("digest:\n%s", text)
	}
}

func TestRelayInNextDigestAndQuietPeriodReset(t *testing.T) {
	tg := newRelayGateway(t)
	tg.d.Ack = policies.AckPolicy{Repeat: "none", BriefAfter: time.Hour}
	ctx := context.Background()
	tok := checkInTokens(t, tg)["Ana"]
	tg.clock.Advance(time.Minute)
	if r := tg.receive(t, sms(anaPhone, "one more thing")); r.Action != ActionQuiet {
		t.Fatalf("second message: %s, want quiet", r.Action)
	}
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	tg.clock.Advance(time.Minute)
	tg.receive(t, relayMail(therapistAt, tok, "Thanks <Ana>, we'll talk Thursday."))
	o.Flush(ctx)
	tg.clock.Advance(time.Minute)
	if r := tg.receive(t, sms(anaPhone, "thank you!")); r.Action != ActionAck {
		t.Fatalf("message after the relay: %s, want a full ack", r.Action)
	}

	tg.clock.Advance(time.Hour)
	tg.g.CheckIn(ctx, tg.clock.Now(), true)
	_, text, html := digestMail(t, tg.store)
	section := text[strings.Index(text, "== Ana"):]
	want := []string{"one more thing", "thank you!", "You replied by text: sent", "    Thanks <Ana>, we'll talk Thursday.", "Reply to Ana: write to"}
	last := -1
	for _, w := range want {
		i := strings.Index(section, w)
		if i < last {
			t.Fatalf("digest lacks %q after the earlier parts:\n%s", w, text)
		}
		last = i
	}
	if !strings.Contains(html, "Thanks &lt;Ana&gt;, we&#39;ll talk Thursday.") {
		t.Fatalf("HTML does not show the escaped relay:\n%s", html)
	}
	// Shown once.
	tg.receive(t, sms(anaPhone, "later"))
	tg.clock.Advance(time.Hour)
	tg.g.CheckIn(ctx, tg.clock.Now(), true)
	if _, text, _ := digestMail(t, tg.store); strings.Contains(text, "You replied") {
		t.Fatalf("relay shown twice:\n%s", text)
	}
}

func TestRelayAloneSendsNoDigest(t *testing.T) {
	tg := newRelayGateway(t)
	ctx := context.Background()
	tok := checkInTokens(t, tg)["Ana"]
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	tg.receive(t, relayMail(therapistAt, tok, "See you."))
	o.Flush(ctx)
	tg.clock.Advance(time.Hour)
	if id, err := tg.g.CheckIn(ctx, tg.clock.Now(), true); err != nil || id != 0 {
		t.Fatalf("CheckIn = %d, %v; want no digest for a relay that went well", id, err)
	}
}

func TestSMSDirectRelay(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[on], func(t *testing.T) {
			tg := newRelayGateway(t)
			tg.setPractice(func(p *Practice) { p.SMSRelay = on })
			a := urgentFrom(t, tg, anaPhone)
			before := len(outbox(t, tg.store))
			r := tg.receive(t, sms(danaPhone, "This is Dana from the practice. I'll call you in 5 minutes."))
			if !on {
				if r.MessageID == 0 || r.RelayID != 0 || len(rowsOf(t, tg.store, "relay")) != 0 {
					t.Fatalf("with relaying off the text is an ordinary message: %+v", r)
				}
				return
			}
			if r.Action != ActionRelay || r.AlertID != a.AlertID || r.ClientID != a.ClientID || r.MessageID != 0 {
				t.Fatalf("result %+v", r)
			}
			added := outbox(t, tg.store)[before:]
			if len(added) != 1 || added[0].Kind != "relay" || added[0].To != anaPhone ||
				added[0].Body != "This is Dana from the practice. I'll call you in 5 minutes." {
				t.Fatalf("queued %+v", added)
			}
			f := &fakeSender{}
			o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
			o.Flush(context.Background())
			n := notices(t, tg.store, 0)
			if len(n) != 1 || n[0].Channel != "sms" || n[0].To != danaPhone ||
				n[0].Body != "Sent to Ana by text at 2:00 PM. Alert #1 is still open: reply ACK 1 to stop the paging." {
				t.Fatalf("confirmation %+v", n)
			}
			// ACK and STOP stay what they are.
			if r := tg.receive(t, sms(danaPhone, "ACK 1")); r.Action != ActionAlertAck {
				t.Fatalf("ACK: %+v", r)
			}
			if r := tg.receive(t, sms(danaPhone, "STOP")); r.Action != ActionOptOut {
				t.Fatalf("STOP: %+v", r)
			}
			// Someone not on staff texting is a client, relaying or not.
			if r := tg.receive(t, sms("+15550100777", "hello")); r.Action != ActionAck {
				t.Fatalf("stranger: %+v", r)
			}
		})
	}
}

func TestSMSRelayWithoutRecentAlert(t *testing.T) {
	tg := newRelayGateway(t)
	tg.setPractice(func(p *Practice) { p.SMSRelay = true })
	urgentFrom(t, tg, anaPhone)
	tg.clock.Advance(25 * time.Hour)
	before := len(outbox(t, tg.store))
	r := tg.receive(t, sms(samPhone, "Checking in."))
	if r.Action != ActionRelayRefused {
		t.Fatalf("result %+v", r)
	}
	added := outbox(t, tg.store)[before:]
	if len(added) != 1 || added[0].Kind != "notice" || added[0].To != samPhone || !strings.Contains(added[0].Body, "not passed on") {
		t.Fatalf("queued %+v", added)
	}
}

func TestBounceMarksDeliveryFailed(t *testing.T) {
	tg := newRelayGateway(t)
	ctx := context.Background()
	tg.receive(t, blair("Hello", "hi"))
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	o.Flush(ctx)
	var ackID int64
	var pid string
	tg.store.db.QueryRow(`SELECT id, provider_id FROM outbox WHERE kind = 'ack' AND channel = 'email'`).Scan(&ackID, &pid)
	bounce := email("MAILER-DAEMON@mail.example.org", "Undelivered Mail Returned to Sender", "could not deliver")
	bounce.Automated, bounce.BounceOf, bounce.BounceStatus = true, "<"+pid+">", "5.1.1"
	r := tg.receive(t, bounce)
	if r.Action != ActionAutomated {
		t.Fatalf("bounce: %+v", r)
	}
	status, code := deliveryStatus(t, tg.store, ackID)
	var reason string
	tg.store.db.QueryRow(`SELECT error FROM outbox WHERE id = ?`, ackID).Scan(&reason)
	if status != "failed" || code != "5.1.1" || reason != "bounced" {
		t.Fatalf("bounced ack: status %q code %q error %q", status, code, reason)
	}
	tg.receive(t, bounce) // delivered twice by IMAP: no change, no error
	tg.clock.Advance(time.Hour)
	tg.g.CheckIn(ctx, tg.clock.Now(), true)
	_, text, _ := digestMail(t, tg.store)
	if !strings.Contains(text, "acknowledgement to Blair by email") || !strings.Contains(text, "bounced (5.1.1)") {
		t.Fatalf("digest does not list the bounce:\n%s", text)
	}
}

func TestBouncedRelayIsReported(t *testing.T) {
	tg := newRelayGateway(t)
	ctx := context.Background()
	tg.receive(t, blair("Hello", "hi"))
	tok := checkInTokens(t, tg)["Blair"]
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	tg.receive(t, relayMail(therapistAt, tok, "Hello Blair."))
	o.Flush(ctx)
	var pid string
	tg.store.db.QueryRow(`SELECT provider_id FROM outbox WHERE kind = 'relay'`).Scan(&pid)
	bounce := email("MAILER-DAEMON@mail.example.org", "Returned", "")
	bounce.Automated, bounce.BounceOf, bounce.BounceStatus = true, pid, "5.2.2"
	tg.receive(t, bounce)
	n := notices(t, tg.store, 0)
	if len(n) != 2 || !strings.Contains(n[1].Body, "Your reply to Blair by email was not delivered after all: the client's mail server returned it as undeliverable (5.2.2)") {
		t.Fatalf("notices %+v", n)
	}
}

func TestBouncedDigestHoldsMessagesAgain(t *testing.T) {
	tg := newRelayGateway(t)
	ctx := context.Background()
	checkInTokens(t, tg)
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	o.Flush(ctx)
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE state = 'delivered'`); n != 1 {
		t.Fatalf("%d delivered", n)
	}
	var pid string
	tg.store.db.QueryRow(`SELECT provider_id FROM outbox WHERE kind = 'digest'`).Scan(&pid)
	bounce := email("MAILER-DAEMON@mail.example.org", "Returned", "")
	bounce.Automated, bounce.BounceOf, bounce.BounceStatus = true, pid, "5.1.1"
	tg.receive(t, bounce)
	if n := count(t, tg.store, `SELECT count(*) FROM messages WHERE state = 'held' AND digest_id IS NULL AND body = 'Can we talk about Thursday?'`); n != 1 {
		t.Fatal("the bounced digest's message is not held again")
	}
	tg.clock.Advance(time.Hour)
	tg.g.CheckIn(ctx, tg.clock.Now(), true)
	if _, text, _ := digestMail(t, tg.store); !strings.Contains(text, "Can we talk about Thursday?") {
		t.Fatalf("next digest lacks the message:\n%s", text)
	}
}

func TestMigrateV4KeepsClientsRelayable(t *testing.T) {
	// A client who last wrote before 0005 has no last_address: the relay
	// falls back to their address on file.
	tg := newRelayGateway(t)
	tg.store.db.Exec(`UPDATE clients SET last_address = ''`)
	tok := checkInTokens(t, tg)["Ana"]
	tg.receive(t, relayMail(therapistAt, tok, "Hi Ana."))
	if rows := rowsOf(t, tg.store, "relay"); len(rows) != 1 || rows[0].To != anaPhone {
		t.Fatalf("relay rows %+v", rows)
	}
}

func TestStaffReplyToDigestIsNotAClientMessage(t *testing.T) {
	tg := newRelayGateway(t)
	ctx := context.Background()
	checkInTokens(t, tg)
	f := &fakeSender{}
	o := newOutbox(tg.store, map[envelope.Channel]envelope.Sender{envelope.SMS: f, envelope.Email: f})
	o.Flush(ctx)
	var digestID string
	tg.store.db.QueryRow(`SELECT provider_id FROM outbox WHERE kind = 'digest'`).Scan(&digestID)
	clients := count(t, tg.store, `SELECT count(*) FROM clients`)

	in := email(therapistAt, "Re: Check-in: 1 message from 1 client", "Ana: see you Thursday")
	in.References = []string{"<" + digestID + ">"}
	r := tg.receive(t, in)
	if r.Action != ActionRelayRefused || r.MessageID != 0 {
		t.Fatalf("reply to the digest: %+v", r)
	}
	if n := count(t, tg.store, `SELECT count(*) FROM clients`); n != clients {
		t.Fatal("the therapist was filed as a client")
	}
	n := notices(t, tg.store, 0)
	if len(n) != 1 || n[0].To != "therapist@example.org" || !strings.Contains(n[0].Body, "went to the practice mailbox, not to a client") {
		t.Fatalf("notices %+v", n)
	}
	// Anyone else answering the same thread, or the therapist writing
	// afresh, is an ordinary message as before.
	other := email("Blair <blair@example.org>", "Re: Check-in", "hello")
	other.References = in.References
	if r := tg.receive(t, other); r.MessageID == 0 {
		t.Fatalf("a stranger's mail was not filed: %+v", r)
	}
	if r := tg.receive(t, email(therapistAt, "Testing", "does this work?")); r.MessageID == 0 {
		t.Fatalf("a fresh mail from the therapist was not filed: %+v", r)
	}
}
