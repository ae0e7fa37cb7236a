package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

var linkRE = regexp.MustCompile(`https://gw\.example\.org/ack/(\S+)`)

// links returns the acknowledgement link paths in the page emails to to.
func links(t testing.TB, s *Store, to string) []string {
	t.Helper()
	var out []string
	for _, q := range outbox(t, s) {
		if q.Channel == "email" && q.To == to && (q.Kind == "oncall" || q.Kind == "escalation") {
			m := linkRE.FindStringSubmatch(q.Body)
			if m == nil {
				t.Fatalf("page email without a link:\n%s", q.Body)
			}
			out = append(out, "/ack/"+m[1])
		}
	}
	return out
}

// hit requests path from the handler and returns the status and body.
func hit(t testing.TB, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("%s %s: content type %q", method, path, ct)
	}
	return rec.Code, string(b)
}

func ackedBy(t testing.TB, s *Store, id int64) (by, via string) {
	t.Helper()
	s.db.QueryRow(`SELECT acked_by, acked_via FROM alerts WHERE id = ?`, id).Scan(&by, &via)
	return
}

func TestAckLink(t *testing.T) {
	tg := newOnCallGateway(t)
	tg.setPractice(func(p *Practice) { p.AckURL = "https://gw.example.org/" })
	h := tg.e.AckHandler()
	a := urgentFrom(t, tg, clientPhone)
	tg.clock.Advance(10 * time.Minute)
	tg.step(t) // Sam is paged too
	link := links(t, tg.store, "dana@example.org")[0]

	// GET (a mail scanner, or Dana looking) shows the button and changes nothing.
	code, body := hit(t, h, "GET", link)
	if code != http.StatusOK || !strings.Contains(body, "Acknowledge alert #1") || !strings.Contains(body, `method="post"`) {
		t.Fatalf("GET: %d\n%s", code, body)
	}
	for _, secret := range []string{"safe tonight", clientPhone, "Dana"} {
		if strings.Contains(body, secret) {
			t.Fatalf("page shows %q", secret)
		}
	}
	if by, _ := ackedBy(t, tg.store, a.AlertID); by != "" {
		t.Fatal("GET acknowledged the alert")
	}

	before := len(outbox(t, tg.store))
	code, body = hit(t, h, "POST", link)
	if code != http.StatusOK || !strings.Contains(body, "Alert #1 is acknowledged") {
		t.Fatalf("POST: %d\n%s", code, body)
	}
	if by, via := ackedBy(t, tg.store, a.AlertID); by != "Dana" || via != "link" {
		t.Fatalf("acked by %q via %q", by, via)
	}
	if told := notices(t, tg.store, before); len(told) != 1 || told[0].To != samPhone || !strings.Contains(told[0].Body, "Dana acknowledged") {
		t.Fatalf("others told %+v", told)
	}

	// Replay: refused, nothing changes.
	before = len(outbox(t, tg.store))
	if code, body := hit(t, h, "POST", link); code != http.StatusGone || !strings.Contains(body, "already used") {
		t.Fatalf("replayed POST: %d\n%s", code, body)
	}
	if code, _ := hit(t, h, "GET", link); code != http.StatusGone {
		t.Fatalf("GET of a used link: %d", code)
	}
	if len(outbox(t, tg.store)) != before {
		t.Fatal("replay queued messages")
	}

	// Sam's link now says who has it, and still acknowledges nothing.
	samLink := links(t, tg.store, "sam@example.org")[0]
	if code, body := hit(t, h, "GET", samLink); code != http.StatusOK || !strings.Contains(body, "Dana acknowledged it at 2:10 PM") ||
		strings.Contains(body, "<form") {
		t.Fatalf("GET of an acknowledged alert's link: %d\n%s", code, body)
	}
	if code, _ := hit(t, h, "POST", samLink); code != http.StatusOK {
		t.Fatalf("POST of an acknowledged alert's link: %d", code)
	}
	if by, _ := ackedBy(t, tg.store, a.AlertID); by != "Dana" {
		t.Fatalf("acked_by changed to %q", by)
	}
}

func TestAckLinkTamperedOrExpired(t *testing.T) {
	tg := newOnCallGateway(t)
	tg.setPractice(func(p *Practice) { p.AckURL = "https://gw.example.org" })
	h := tg.e.AckHandler()
	a := urgentFrom(t, tg, clientPhone)
	link := links(t, tg.store, "dana@example.org")[0]
	payload, mac, _ := strings.Cut(strings.TrimPrefix(link, "/ack/"), ".")

	// Another alert id under the same MAC.
	raw, _ := b64.DecodeString(payload)
	raw[7] ^= 2
	flip := func(s string) string {
		b := []byte(s)
		b[len(b)/2] ^= 1
		return string(b)
	}
	for name, path := range map[string]string{
		"other alert":  "/ack/" + b64.EncodeToString(raw) + "." + mac,
		"bad mac":      "/ack/" + payload + "." + flip(mac),
		"no mac":       "/ack/" + payload,
		"garbage":      "/ack/%00%ff",
		"unknown key":  "/ack/" + ackToken{alertID: a.AlertID, expires: tg.clock.Now().Add(time.Hour), nonce: make([]byte, ackNonceSize)}.sign([]byte("k")),
		"short fields": "/ack/AAAA.AAAA",
	} {
		if code, body := hit(t, h, "POST", path); code != http.StatusNotFound || !strings.Contains(body, "not valid") {
			t.Errorf("%s: %d\n%s", name, code, body)
		}
	}

	tg.clock.Advance(ackLinkTTL)
	if code, body := hit(t, h, "POST", link); code != http.StatusGone || !strings.Contains(body, "expired") {
		t.Fatalf("expired link: %d\n%s", code, body)
	}
	if by, _ := ackedBy(t, tg.store, a.AlertID); by != "" {
		t.Fatal("a refused link acknowledged the alert")
	}
	if n := count(t, tg.store, `SELECT count(*) FROM ack_tokens WHERE used_at IS NOT NULL`); n != 0 {
		t.Fatal("a refused link was used up")
	}
}

// The generated key is kept in the store, so links work after a restart.
func TestAckLinkSurvivesRestart(t *testing.T) {
	tg := newOnCallGateway(t)
	tg.setPractice(func(p *Practice) { p.AckURL = "https://gw.example.org" })
	a := urgentFrom(t, tg, clientPhone)
	link := links(t, tg.store, "dana@example.org")[0]
	restarted := &Escalator{Store: tg.store, Practice: tg.e.Practice}
	if code, _ := hit(t, restarted.AckHandler(), "POST", link); code != http.StatusOK {
		t.Fatalf("link after restart: %d", code)
	}
	if by, _ := ackedBy(t, tg.store, a.AlertID); by != "Dana" {
		t.Fatal("not acknowledged")
	}
	// With a configured key, links signed by the generated one fail.
	tg.receive(t, sms("+15550100002", "i want to kill myself"))
	link = links(t, tg.store, "dana@example.org")[1]
	keyed := &Escalator{Store: tg.store, Practice: tg.e.Practice}
	keyed.Practice.AckKey = []byte("configured key")
	if code, _ := hit(t, keyed.AckHandler(), "GET", link); code != http.StatusNotFound {
		t.Fatalf("link under another key: %d", code)
	}
}

func TestNoLinkWithoutAckURL(t *testing.T) {
	tg := newOnCallGateway(t)
	urgentFrom(t, tg, clientPhone)
	for _, q := range outbox(t, tg.store) {
		if strings.Contains(q.Body, "/ack/") {
			t.Fatalf("link without AckURL:\n%s", q.Body)
		}
	}
	if n := count(t, tg.store, `SELECT count(*) FROM ack_tokens`); n != 0 {
		t.Fatal("tokens recorded without AckURL")
	}
	var v string
	if v, _ = tg.store.Checkpoint(context.Background(), ackKeyName); v != "" {
		t.Fatal("key generated without AckURL")
	}
}
