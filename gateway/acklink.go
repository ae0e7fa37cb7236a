package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// Acknowledgement links.
const (
	ackLinkTTL   = 24 * time.Hour   // how long a link in a page email works
	ackKeyName   = "oncall:ack-key" // checkpoint holding the generated key
	ackKeySize   = 32               // bytes
	ackNonceSize = 12               // bytes
	ackMACSize   = 16               // bytes of HMAC-SHA256 kept
	ackPayload   = 8 + 8 + ackNonceSize
)

// ackDomain separates these MACs from any other use of the key.
const ackDomain = "therapistinbox ack link v1\x00"

var b64 = base64.RawURLEncoding

// ackToken is what a link carries: alert, expiry and a one-time nonce.
type ackToken struct {
	alertID int64
	expires time.Time
	nonce   []byte
}

// sign returns the token as base64url(payload) "." base64url(MAC).
func (t ackToken) sign(key []byte) string {
	payload := binary.BigEndian.AppendUint64(nil, uint64(t.alertID))
	payload = binary.BigEndian.AppendUint64(payload, uint64(t.expires.Unix()))
	payload = append(payload, t.nonce...)
	return b64.EncodeToString(payload) + "." + b64.EncodeToString(ackMAC(key, payload))
}

func ackMAC(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ackDomain))
	m.Write(payload)
	return m.Sum(nil)[:ackMACSize]
}

// parseAckToken checks s's MAC and returns what it carries.
func parseAckToken(key []byte, s string) (ackToken, bool) {
	p, m, ok := strings.Cut(s, ".")
	if !ok || len(key) == 0 {
		return ackToken{}, false
	}
	payload, err1 := b64.DecodeString(p)
	mac, err2 := b64.DecodeString(m)
	if err1 != nil || err2 != nil || len(payload) != ackPayload || !hmac.Equal(mac, ackMAC(key, payload)) {
		return ackToken{}, false
	}
	return ackToken{
		alertID: int64(binary.BigEndian.Uint64(payload)),
		expires: time.Unix(int64(binary.BigEndian.Uint64(payload[8:])), 0),
		nonce:   payload[16:],
	}, true
}

// ackKey returns the key that signs acknowledgement links: Practice.AckKey,
// or one generated once and kept in the checkpoints table, so links
// survive restarts. With create false a missing key gives nil.
func (p Practice) ackKey(ctx context.Context, tx *sql.Tx, now time.Time, create bool) ([]byte, error) {
	if len(p.AckKey) > 0 {
		return p.AckKey, nil
	}
	v, err := checkpoint(ctx, tx, ackKeyName)
	switch {
	case err != nil:
		return nil, err
	case v != "":
		key, err := b64.DecodeString(v)
		if err != nil || len(key) == 0 {
			return nil, errors.New("oncall: stored link key is damaged")
		}
		return key, nil
	case !create:
		return nil, nil
	}
	key := make([]byte, ackKeySize)
	rand.Read(key)
	return key, setCheckpoint(ctx, tx, now, ackKeyName, b64.EncodeToString(key))
}

// newAckLink makes and records a one-time link with which person
// acknowledges alert id; "" when the practice has no public URL.
func (p Practice) newAckLink(ctx context.Context, tx *sql.Tx, now time.Time, id int64, person string) (string, error) {
	if p.AckURL == "" {
		return "", nil
	}
	key, err := p.ackKey(ctx, tx, now, true)
	if err != nil {
		return "", err
	}
	t := ackToken{alertID: id, expires: now.Add(ackLinkTTL).Truncate(time.Second), nonce: make([]byte, ackNonceSize)}
	rand.Read(t.nonce)
	if _, err := tx.ExecContext(ctx, `INSERT INTO ack_tokens (nonce, alert_id, person, expires_at) VALUES (?, ?, ?, ?)`,
		b64.EncodeToString(t.nonce), id, person, fmtTime(t.expires)); err != nil {
		return "", fmt.Errorf("oncall: record link: %w", err)
	}
	return strings.TrimRight(p.AckURL, "/") + "/ack/" + t.sign(key), nil
}

// What a presented link can be.
const (
	linkOK = iota
	linkInvalid
	linkExpired
	linkUsed
)

// linkCheck is what a presented link turned out to be.
type linkCheck struct {
	state   int
	alertID int64
	person  string
	nonce   string
	by      string // who acknowledged the alert already, if anyone
	at      time.Time
}

// checkLink verifies token: MAC, expiry, and that its nonce was issued and
// not used.
func (p Practice) checkLink(ctx context.Context, tx *sql.Tx, now time.Time, token string) (linkCheck, error) {
	key, err := p.ackKey(ctx, tx, now, false)
	if err != nil {
		return linkCheck{}, err
	}
	t, ok := parseAckToken(key, token)
	if !ok {
		return linkCheck{state: linkInvalid}, nil
	}
	c := linkCheck{alertID: t.alertID, nonce: b64.EncodeToString(t.nonce)}
	if !now.Before(t.expires) {
		c.state = linkExpired
		return c, nil
	}
	var alertID int64
	var used, acked sql.NullString
	err = tx.QueryRowContext(ctx, `
		SELECT t.alert_id, t.person, t.used_at, a.acked_at, a.acked_by
		FROM ack_tokens t JOIN alerts a ON a.id = t.alert_id WHERE t.nonce = ?`, c.nonce).
		Scan(&alertID, &c.person, &used, &acked, &c.by)
	switch {
	case errors.Is(err, sql.ErrNoRows) || (err == nil && alertID != t.alertID):
		c.state = linkInvalid
	case err != nil:
		return c, fmt.Errorf("oncall: find link: %w", err)
	case used.Valid:
		c.state = linkUsed
	default:
		c.at = parseTime(acked)
		if !acked.Valid {
			c.by = ""
		}
	}
	return c, nil
}

// AckHandler serves the acknowledgement links in page emails at
// /ack/{token}: GET shows a button and changes nothing (mail scanners
// follow links); POST acknowledges the alert for the person the link was
// sent to and uses the link up. Mount it at "/ack/".
func (e *Escalator) AckHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ack/{token}", func(w http.ResponseWriter, r *http.Request) { e.serveAck(w, r, false) })
	mux.HandleFunc("POST /ack/{token}", func(w http.ResponseWriter, r *http.Request) { e.serveAck(w, r, true) })
	return mux
}

// ackPage is one of the tiny pages the link shows; it never carries client
// content, only the alert number.
type ackPage struct {
	Title, Text, Button string
}

var ackPageTmpl = template.Must(template.New("ack").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title></head>
<body style="margin:0;padding:16px;font:17px/1.45 -apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#222">
<div style="max-width:480px;margin:0 auto">
<h1 style="font-size:21px">{{.Title}}</h1>
{{- with .Text}}
<p>{{.}}</p>{{end}}
{{- with .Button}}
<form method="post"><button type="submit" style="font-size:18px;padding:12px 20px">{{.}}</button></form>{{end}}
</div></body></html>
`))

func (e *Escalator) serveAck(w http.ResponseWriter, r *http.Request, post bool) {
	e.init()
	var c linkCheck
	var o ackOutcome
	p := e.Practice
	err := e.Store.tx(r.Context(), func(tx *sql.Tx, now time.Time) error {
		var err error
		if c, err = p.checkLink(r.Context(), tx, now, r.PathValue("token")); err != nil || c.state != linkOK || !post {
			return err
		}
		if _, err := tx.ExecContext(r.Context(), `UPDATE ack_tokens SET used_at = ? WHERE nonce = ?`, fmtTime(now), c.nonce); err != nil {
			return fmt.Errorf("oncall: use link: %w", err)
		}
		o, err = p.acknowledge(r.Context(), tx, now, c.alertID, c.person, "link")
		return err
	})
	status, page := http.StatusOK, ackPage{}
	switch {
	case err != nil:
		e.Logger.Error("ack link failed", "err", err)
		status, page = http.StatusInternalServerError, ackPage{Title: "Something went wrong",
			Text: "The alert was not acknowledged. Please reply ACK with the alert number by text instead."}
	case c.state == linkInvalid:
		status, page = http.StatusNotFound, ackPage{Title: "This link is not valid",
			Text: "Please acknowledge by replying ACK with the alert number by text."}
	case c.state == linkUsed:
		status, page = http.StatusGone, ackPage{Title: "This link was already used",
			Text: fmt.Sprintf("Each link works once. Alert #%d was not acknowledged again.", c.alertID)}
	case c.state == linkExpired:
		status, page = http.StatusGone, ackPage{Title: "This link has expired",
			Text: fmt.Sprintf("To acknowledge alert #%d, reply ACK %d by text.", c.alertID, c.alertID)}
	case o.action == ActionAlertAck:
		page = ackPage{Title: fmt.Sprintf("Alert #%d is acknowledged", c.alertID),
			Text: "Thank you. Nobody else will be paged for it, and the others already paged are being told."}
		e.Logger.Info("alert acknowledged", "alert_id", c.alertID, "via", "link")
		e.Metrics.observeAck("link")
		if e.Outbox != nil {
			e.Outbox.Kick()
		}
	case o.action == ActionAlertAckAlready:
		page = alreadyPage(p, c.alertID, o.by, o.at)
	case c.by != "": // GET of an alert someone acknowledged meanwhile
		page = alreadyPage(p, c.alertID, c.by, c.at)
	default: // GET of a usable link
		page = ackPage{Title: fmt.Sprintf("Alert #%d", c.alertID),
			Text:   "Press the button to take this alert. Nobody else will be paged for it.",
			Button: fmt.Sprintf("Acknowledge alert #%d", c.alertID)}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Robots-Tag", "noindex")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	ackPageTmpl.Execute(w, page)
}

func alreadyPage(p Practice, id int64, by string, at time.Time) ackPage {
	return ackPage{Title: fmt.Sprintf("Alert #%d is already acknowledged", id),
		Text: fmt.Sprintf("%s acknowledged it at %s. No action needed.", by, p.clock(at))}
}
