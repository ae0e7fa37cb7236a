package gateway

import (
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"strings"
	"text/template"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Digester builds the therapist's digest at each check-in.
type Digester struct {
	Store    *Store
	Practice Practice
	Outbox   *Outbox // woken after a digest is queued; may be nil
}

// CheckIn runs the check-in scheduled for at: every held message not yet in
// a digest, and every delivery that failed since the last one, go into one
// digest email queued for the therapist. It is idempotent: a check-in
// already run for at does nothing. manual marks a check-in fired by hand
// (it does not count as the scheduled one). It returns the digest id, 0
// when nothing was sent.
func (g *Digester) CheckIn(ctx context.Context, at time.Time, manual bool) (int64, error) {
	var digestID int64
	err := g.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `
			INSERT INTO checkins (scheduled_for, fired_at, manual) VALUES (?, ?, ?)
			ON CONFLICT (scheduled_for) DO NOTHING`, fmtTime(at), fmtTime(now), manual)
		if err != nil {
			return fmt.Errorf("digest: record check-in: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // this check-in ran already
		}
		checkinID, err := res.LastInsertId()
		if err != nil {
			return err
		}
		d, err := loadDigest(ctx, tx, g.Practice)
		if err != nil {
			return err
		}
		// Replies that went well wait for a digest with something else in
		// it; one that failed is a reason to write.
		if d.messages == 0 && d.failureCount() == 0 && !g.Practice.EmptyDigest {
			return audit(ctx, tx, now, "checkin:empty", auditIDs{})
		}
		res, err = tx.ExecContext(ctx, `
			INSERT INTO digests (checkin_id, created_at, message_count, urgent_count, failure_count, state)
			VALUES (?, ?, ?, ?, ?, 'pending')`, checkinID, fmtTime(now), d.messages, d.urgent, d.failureCount())
		if err != nil {
			return fmt.Errorf("digest: insert: %w", err)
		}
		if digestID, err = res.LastInsertId(); err != nil {
			return err
		}
		// The same transaction read these rows, so the sets match exactly.
		if _, err := tx.ExecContext(ctx, `
			UPDATE messages SET digest_id = ? WHERE state IN ('held', 'urgent') AND digest_id IS NULL`, digestID); err != nil {
			return fmt.Errorf("digest: claim messages: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE outbox SET reported_in = ? WHERE `+failedDeliveries, digestID); err != nil {
			return fmt.Errorf("digest: claim failures: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE relays SET reported_in = ? WHERE `+unreportedRelays, digestID); err != nil {
			return fmt.Errorf("digest: claim relays: %w", err)
		}
		if err := d.addReplies(ctx, tx, now, g.Practice, digestID); err != nil {
			return err
		}
		d.When = at
		text, html, err := d.render()
		if err != nil {
			return err
		}
		_, err = insertOutbox(ctx, tx, now, outRow{kind: envelope.KindDigest, channel: envelope.Email,
			to: g.Practice.DigestTo, toName: g.Practice.Therapist, subject: d.subject(), body: text, html: html,
			digestID: digestID})
		if err != nil {
			return err
		}
		return audit(ctx, tx, now, "checkin:digest", auditIDs{digest: digestID})
	})
	if err == nil && digestID != 0 && g.Outbox != nil {
		g.Outbox.Kick()
	}
	return digestID, err
}

// LastCheckin returns the scheduled time of the last scheduled check-in
// that ran (zero if none).
func (s *Store) LastCheckin(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var t sql.NullString
	if err := s.db.QueryRowContext(ctx, `SELECT max(scheduled_for) FROM checkins WHERE manual = 0`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("store: last check-in: %w", err)
	}
	return parseTime(t), nil
}

// failedDeliveries selects outbox rows whose failure no digest has listed;
// pages cancelled by an acknowledgement did not fail.
// A relay's failure is shown with the relay, under its client.
const failedDeliveries = `reported_in IS NULL AND kind NOT IN ('digest', 'relay')
	AND ((state = 'failed' AND error_code <> 'cancelled') OR delivery_status IN ('failed', 'undelivered'))`

// unreportedRelays selects finished relays to a known client that no
// digest has shown; one still being sent waits for the next digest.
const unreportedRelays = `reported_in IS NULL AND state <> 'queued'
	AND client_id IN (SELECT id FROM clients)`

// digestSent marks the messages of the digest sent in outbox row id as
// delivered: the mail server accepted it.
func digestSent(ctx context.Context, tx *sql.Tx, now time.Time, outboxID int64) error {
	var id int64
	if err := tx.QueryRowContext(ctx, `SELECT digest_id FROM outbox WHERE id = ?`, outboxID).Scan(&id); err != nil {
		return fmt.Errorf("digest: find: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE digests SET state = 'sent', sent_at = ? WHERE id = ?`, fmtTime(now), id); err != nil {
		return fmt.Errorf("digest: mark sent: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE messages SET state = 'delivered' WHERE digest_id = ?`, id); err != nil {
		return fmt.Errorf("digest: mark delivered: %w", err)
	}
	return audit(ctx, tx, now, "digest:delivered", auditIDs{digest: id, outbox: outboxID})
}

// digestFailed puts the messages of a digest that could not be sent back
// in the queue for the next one.
func digestFailed(ctx context.Context, tx *sql.Tx, now time.Time, outboxID int64) error {
	var id int64
	if err := tx.QueryRowContext(ctx, `SELECT digest_id FROM outbox WHERE id = ?`, outboxID).Scan(&id); err != nil {
		return fmt.Errorf("digest: find: %w", err)
	}
	for _, q := range []string{
		`UPDATE digests SET state = 'failed' WHERE id = ?`,
		`UPDATE messages SET digest_id = NULL WHERE digest_id = ?`,
		`UPDATE outbox SET reported_in = NULL WHERE reported_in = ?`,
		`UPDATE relays SET reported_in = NULL WHERE reported_in = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("digest: release: %w", err)
		}
	}
	return audit(ctx, tx, now, "digest:failed", auditIDs{digest: id, outbox: outboxID})
}

// digestReturned undoes a digest the mail server accepted and then
// bounced: its messages are held again for the next one.
func digestReturned(ctx context.Context, tx *sql.Tx, now time.Time, outboxID int64) error {
	var id int64
	if err := tx.QueryRowContext(ctx, `SELECT digest_id FROM outbox WHERE id = ?`, outboxID).Scan(&id); err != nil {
		return fmt.Errorf("digest: find: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE messages SET state = CASE WHEN urgent THEN 'urgent' ELSE 'held' END WHERE digest_id = ? AND state = 'delivered'`,
		id); err != nil {
		return fmt.Errorf("digest: hold again: %w", err)
	}
	return digestFailed(ctx, tx, now, outboxID)
}

// digest is what one digest email shows.
type digest struct {
	When     time.Time
	Clients  []*digestClient
	Failures []digestFailure

	messages, urgent int
	failedRelays     int
	loc              *time.Location
}

// client returns the section for client id, adding it at the end.
func (d *digest) client(byID map[int64]*digestClient, id int64, name string) *digestClient {
	c := byID[id]
	if c == nil {
		c = &digestClient{id: id, Name: name}
		if c.Name == "" {
			c.Name = fmt.Sprintf("Unknown sender (client %d)", id)
		}
		byID[id] = c
		d.Clients = append(d.Clients, c)
	}
	return c
}

type digestClient struct {
	id       int64
	Name     string
	Reach    []string
	Urgent   int
	Messages []digestMessage
	Relays   []digestRelay // replies since the last digest
	Reply    *digestReply  // how to answer; nil when there is no way
	NoReply  string        // why there is no way, when there is a reason to say
}

// digestRelay is a reply relayed (or refused) to a client.
type digestRelay struct {
	At      time.Time
	Summary string // "You replied by text: sent"
	Text    string
	Failed  bool
}

// digestReply is the reply address offered under a client.
type digestReply struct {
	Name, Address, Mailto string
	Goes                  string // "goes to Ana by text"
}

type digestMessage struct {
	id          int64
	Alert       string // the alert's history, for urgent messages
	Received    time.Time
	Channel     string
	Subject     string
	Text        string
	Urgent      bool
	Category    string
	Evidence    []string
	Automated   bool
	Action      string
	Attachments []envelope.Attachment
	Notes       []string
}

type digestFailure struct {
	Kind, Channel, Client string
	At                    time.Time
	Code, Reason, Status  string
}

// loadDigest reads everything held: urgent messages first, then oldest
// first, grouped by client in that order, each client's replies since the
// last digest under their messages; times show in the practice's zone.
func loadDigest(ctx context.Context, tx *sql.Tx, p Practice) (*digest, error) {
	loc := p.loc()
	d := &digest{loc: loc}
	rows, err := tx.QueryContext(ctx, `
		SELECT m.id, m.client_id, c.first_name, m.channel, m.received_at, m.subject, m.body, m.urgent, m.category,
			m.evidence, m.automated, m.action, m.attachments, m.notes
		FROM messages m JOIN clients c ON c.id = m.client_id
		WHERE m.state IN ('held', 'urgent') AND m.digest_id IS NULL
		ORDER BY m.urgent DESC, m.received_at, m.id`)
	if err != nil {
		return nil, fmt.Errorf("digest: load: %w", err)
	}
	defer rows.Close()
	byID := map[int64]*digestClient{}
	for rows.Next() {
		var id int64
		var name, evidence, attachments, notes string
		var received sql.NullString
		var m digestMessage
		if err := rows.Scan(&m.id, &id, &name, &m.Channel, &received, &m.Subject, &m.Text, &m.Urgent, &m.Category,
			&evidence, &m.Automated, &m.Action, &attachments, &notes); err != nil {
			return nil, fmt.Errorf("digest: load: %w", err)
		}
		m.Received = parseTime(received)
		m.Evidence = parseStrings(evidence)
		m.Notes = parseStrings(notes)
		json.Unmarshal([]byte(attachments), &m.Attachments) // written by us; a bad row lists none
		c := d.client(byID, id, name)
		c.Messages = append(c.Messages, m)
		d.messages++
		if m.Urgent {
			c.Urgent++
			d.urgent++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("digest: load: %w", err)
	}
	rows.Close()
	if d.urgent > 0 {
		history, err := loadAlertHistory(ctx, tx, loc)
		if err != nil {
			return nil, err
		}
		for _, c := range d.Clients {
			for i := range c.Messages {
				c.Messages[i].Alert = history[c.Messages[i].id]
			}
		}
	}
	if err := d.loadRelays(ctx, tx, p, byID); err != nil {
		return nil, err
	}
	if len(byID) > 0 {
		rows, err := tx.QueryContext(ctx, `
			SELECT client_id, address FROM client_addresses WHERE client_id IN
				(SELECT client_id FROM messages WHERE state IN ('held', 'urgent') AND digest_id IS NULL
				 UNION SELECT client_id FROM relays WHERE `+unreportedRelays+`)
			ORDER BY channel DESC, address`)
		if err != nil {
			return nil, fmt.Errorf("digest: addresses: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var addr string
			if err := rows.Scan(&id, &addr); err != nil {
				return nil, fmt.Errorf("digest: addresses: %w", err)
			}
			if c := byID[id]; c != nil {
				c.Reach = append(c.Reach, addr)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("digest: addresses: %w", err)
		}
		rows.Close()
	}
	rows, err = tx.QueryContext(ctx, `
		SELECT o.kind, o.channel,
			coalesce(nullif(c.first_name, ''), nullif(o.recipient_name, ''), 'client ' || o.client_id, ''), o.created_at, o.error_code, o.error, o.delivery_status
		FROM outbox o LEFT JOIN clients c ON c.id = o.client_id
		WHERE `+failedDeliveries+` ORDER BY o.id`)
	if err != nil {
		return nil, fmt.Errorf("digest: failures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f digestFailure
		var at sql.NullString
		if err := rows.Scan(&f.Kind, &f.Channel, &f.Client, &at, &f.Code, &f.Reason, &f.Status); err != nil {
			return nil, fmt.Errorf("digest: failures: %w", err)
		}
		f.At = parseTime(at)
		d.Failures = append(d.Failures, f)
	}
	return d, rows.Err()
}

// loadAlertHistory returns, by message id, the history of the alerts
// raised for the held messages: who was paged when and by what, and who
// acknowledged.
func loadAlertHistory(ctx context.Context, tx *sql.Tx, loc *time.Location) (map[int64]string, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT a.id, a.message_id, a.acked_at, a.acked_by, a.acked_via, p.step, p.person, p.channel, p.paged_at
		FROM alerts a LEFT JOIN alert_pages p ON p.alert_id = a.id
		WHERE a.message_id IN (SELECT id FROM messages WHERE state IN ('held', 'urgent') AND digest_id IS NULL)
		ORDER BY a.id, p.step, p.id`)
	if err != nil {
		return nil, fmt.Errorf("digest: alerts: %w", err)
	}
	defer rows.Close()
	var hs []*alertHistory
	for rows.Next() {
		var id, msgID int64
		var acked, paged sql.NullString
		var by, via string
		var step sql.NullInt64
		var person, channel sql.NullString
		if err := rows.Scan(&id, &msgID, &acked, &by, &via, &step, &person, &channel, &paged); err != nil {
			return nil, fmt.Errorf("digest: alerts: %w", err)
		}
		if len(hs) == 0 || hs[len(hs)-1].id != id {
			hs = append(hs, &alertHistory{id: id, msgID: msgID, acked: parseTime(acked), by: by, via: via})
		}
		if step.Valid {
			hs[len(hs)-1].add(int(step.Int64), parseTime(paged), person.String, channel.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("digest: alerts: %w", err)
	}
	out := map[int64]string{}
	for _, h := range hs {
		out[h.msgID] = h.String(loc)
	}
	return out, nil
}

// alertHistory is one alert's pages, grouped by step and person.
type alertHistory struct {
	id, msgID int64
	acked     time.Time
	by, via   string
	steps     []historyStep
}

type historyStep struct {
	step   int
	at     time.Time
	people []historyPerson
}

type historyPerson struct {
	name     string
	channels []string
}

func (h *alertHistory) add(step int, at time.Time, person, channel string) {
	if len(h.steps) == 0 || h.steps[len(h.steps)-1].step != step {
		h.steps = append(h.steps, historyStep{step: step, at: at})
	}
	s := &h.steps[len(h.steps)-1]
	if len(s.people) == 0 || s.people[len(s.people)-1].name != person {
		s.people = append(s.people, historyPerson{name: person})
	}
	p := &s.people[len(s.people)-1]
	p.channels = append(p.channels, channelWord(channel))
}

func channelWord(c string) string {
	if c == string(envelope.SMS) {
		return "text"
	}
	return c
}

// String is the history on one line: "Alert #12: 14:02 paged Dana (text,
// email) · 14:12 paged Sam (text) · 14:15 acknowledged by Sam (text)".
func (h *alertHistory) String(loc *time.Location) string {
	var first time.Time // the history's first day; later days are named
	clock := func(t time.Time) string {
		t = t.In(loc)
		if first.IsZero() {
			first = t
		}
		if y, m, d := t.Date(); y != first.Year() || m != first.Month() || d != first.Day() {
			return t.Format("Mon 15:04")
		}
		return t.Format("15:04")
	}
	parts := []string{}
	for _, s := range h.steps {
		var who []string
		for _, p := range s.people {
			who = append(who, fmt.Sprintf("%s (%s)", p.name, strings.Join(p.channels, ", ")))
		}
		parts = append(parts, clock(s.at)+" paged "+strings.Join(who, ", "))
	}
	if h.acked.IsZero() {
		parts = append(parts, "not acknowledged")
	} else {
		how := map[string]string{"sms": "text", "link": "email link"}[h.via]
		parts = append(parts, fmt.Sprintf("%s acknowledged by %s (%s)", clock(h.acked), h.by, how))
	}
	return fmt.Sprintf("Alert #%d: %s", h.id, strings.Join(parts, " · "))
}

func (d *digest) subject() string {
	s := fmt.Sprintf("Check-in: %s from %s", plural(d.messages, "message"), plural(d.writers(), "client"))
	if d.urgent > 0 {
		s += fmt.Sprintf(", %d urgent", d.urgent)
	}
	if n := d.failureCount(); n > 0 {
		s += fmt.Sprintf(", %s", plural(n, "failed delivery"))
	}
	return s
}

// failureCount is the failed deliveries the digest reports, relays
// included.
func (d *digest) failureCount() int { return len(d.Failures) + d.failedRelays }

// writers is the number of clients with messages in the digest.
func (d *digest) writers() int {
	n := 0
	for _, c := range d.Clients {
		if len(c.Messages) > 0 {
			n++
		}
	}
	return n
}

// WriterCount is writers, for the templates.
func (d *digest) WriterCount() int { return d.writers() }

func plural(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	if strings.HasSuffix(one, "y") {
		return fmt.Sprintf("%d %sies", n, one[:len(one)-1])
	}
	return fmt.Sprintf("%d %ss", n, one)
}

//go:embed digest.txt.tmpl
var digestText string

//go:embed digest.html.tmpl
var digestHTML string

func digestFuncs(loc *time.Location) map[string]any {
	if loc == nil {
		loc = time.UTC
	}
	return map[string]any{
		"when":    func(t time.Time) string { return t.In(loc).Format("Mon 2 Jan 15:04") },
		"day":     func(t time.Time) string { return t.In(loc).Format("Monday 2 January 2006, 15:04 MST") },
		"join":    strings.Join,
		"size":    humanSize,
		"channel": func(c string) string { return map[string]string{"sms": "text", "email": "email"}[c] },
		"indent": func(s string) string {
			lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
			for i, l := range lines {
				if l != "" {
					lines[i] = "    " + l
				}
			}
			return strings.Join(lines, "\n")
		},
		"what": func(kind string) string {
			return map[string]string{"ack": "acknowledgement", "ack_repeat": "brief acknowledgement",
				"urgent_reply": "urgent reply", "help": "help reply", "oncall": "on-call page",
				"escalation": "escalation page", "notice": "notice", "relay": "relayed reply"}[kind]
		},
	}
}

var (
	textTmpl = template.Must(template.New("digest").Funcs(digestFuncs(nil)).Parse(digestText))
	htmlTmpl = htmltemplate.Must(htmltemplate.New("digest").Funcs(digestFuncs(nil)).Parse(digestHTML))
)

// render returns the digest as plain text and HTML.
func (d *digest) render() (string, string, error) {
	funcs := digestFuncs(d.loc)
	var t, h strings.Builder
	tt, err := textTmpl.Clone()
	if err != nil {
		return "", "", err
	}
	if err := tt.Funcs(funcs).Execute(&t, d); err != nil {
		return "", "", fmt.Errorf("digest: render text: %w", err)
	}
	ht, err := htmlTmpl.Clone()
	if err != nil {
		return "", "", err
	}
	if err := ht.Funcs(funcs).Execute(&h, d); err != nil {
		return "", "", fmt.Errorf("digest: render html: %w", err)
	}
	return t.String(), h.String(), nil
}

// Total counts, for the templates.
func (d *digest) MessageCount() int { return d.messages }
func (d *digest) UrgentCount() int  { return d.urgent }

func humanSize(n int64) string {
	switch {
	case n <= 0:
		return ""
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%d KB", n>>10)
	default:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
}

func parseStrings(s string) []string {
	var v []string
	json.Unmarshal([]byte(s), &v) // written by us; a bad row reads as empty
	return v
}
