package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Event is one step in the life of a client's messages and replies, as
// the audit shows it.
type Event struct {
	At time.Time
	// What is the step: received, held, acknowledged, alert, in-digest,
	// delivered, relayed, relay-sent, relay-failed, relay-delivered.
	What string
	// Detail holds ids, channels, states, provider ids and staff names;
	// never what anyone wrote, nor a client's name or address.
	Detail string
	// Text is what was written (a message, or a relayed reply), only when
	// asked for.
	Text string
}

// FindClient returns the id of the client filed under address (E.164 or
// lower-cased email) on channel, or ErrNotFound.
func (s *Store) FindClient(ctx context.Context, ch envelope.Channel, address string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var id int64
	err := s.db.QueryRowContext(ctx, `SELECT client_id FROM client_addresses WHERE channel = ? AND address = ?`,
		ch, address).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("store: find client: %w", err)
	}
	return id, nil
}

// Timeline returns everything recorded about a client's messages and the
// replies to them, oldest first: each message received, held, acknowledged
// (with the ack's delivery), alerts, the digest it went in and when that
// was delivered, and each relayed reply with who sent it, its parts'
// provider ids and delivery. Message and reply text is included only with
// withText. ErrNotFound when there is no such client.
func (s *Store) Timeline(ctx context.Context, clientID int64, withText bool) ([]Event, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store: timeline: %w", err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM clients WHERE id = ?`, clientID).Scan(&n); err != nil {
		return nil, fmt.Errorf("store: timeline: %w", err)
	}
	if n == 0 {
		return nil, ErrNotFound
	}
	var evs []Event
	add := func(at sql.NullString, what, detail, text string) {
		if t := parseTime(at); !t.IsZero() {
			if !withText {
				text = ""
			}
			evs = append(evs, Event{At: t, What: what, Detail: detail, Text: text})
		}
	}
	for _, load := range []func(context.Context, *sql.Tx, int64, func(sql.NullString, string, string, string)) error{
		timelineMessages, timelineOutbox, timelineAlerts, timelineRelays,
	} {
		if err := load(ctx, tx, clientID, add); err != nil {
			return nil, fmt.Errorf("store: timeline: %w", err)
		}
	}
	sort.SliceStable(evs, func(i, j int) bool {
		if !evs[i].At.Equal(evs[j].At) {
			return evs[i].At.Before(evs[j].At)
		}
		return stepOrder[evs[i].What] < stepOrder[evs[j].What]
	})
	return evs, nil
}

// stepOrder orders events recorded in the same instant (one transaction)
// the way they happen.
var stepOrder = map[string]int{
	"received": 1, "held": 2, "alert": 3, "acknowledged": 4, "relayed": 5, "relay-refused": 5,
	"relay-sent": 6, "relay-failed": 6, "relay-delivered": 6, "relay-done": 7, "in-digest": 8, "delivered": 9,
}

func timelineMessages(ctx context.Context, tx *sql.Tx, clientID int64, add func(sql.NullString, string, string, string)) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT m.id, m.channel, m.received_at, m.stored_at, m.action, m.urgent, m.category, m.automated, m.subject, m.body,
			m.digest_id, d.created_at, d.sent_at, coalesce(d.state, '')
		FROM messages m LEFT JOIN digests d ON d.id = m.digest_id
		WHERE m.client_id = ? ORDER BY m.received_at, m.id`, clientID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var digestID sql.NullInt64
		var ch, action, category, subject, body, digestState string
		var urgent, automated bool
		var received, stored, digestAt, sentAt sql.NullString
		if err := rows.Scan(&id, &ch, &received, &stored, &action, &urgent, &category, &automated, &subject, &body,
			&digestID, &digestAt, &sentAt, &digestState); err != nil {
			return err
		}
		detail := fmt.Sprintf("msg %d by %s, action %s", id, channelWord(ch), action)
		if urgent {
			detail += ", URGENT (" + category + ")"
		}
		if automated {
			detail += ", automatic mail"
		}
		text := body
		if subject != "" {
			text = "Subject: " + subject + "\n" + body
		}
		add(received, "received", detail, text)
		add(stored, "held", fmt.Sprintf("msg %d held for the check-in", id), "")
		if digestID.Valid {
			add(digestAt, "in-digest", fmt.Sprintf("msg %d in digest %d (%s)", id, digestID.Int64, digestState), "")
			add(sentAt, "delivered", fmt.Sprintf("msg %d delivered to the therapist in digest %d", id, digestID.Int64), "")
		}
	}
	return rows.Err()
}

// timelineOutbox lists what was sent to the client: acknowledgements and
// the parts of relayed replies.
func timelineOutbox(ctx context.Context, tx *sql.Tx, clientID int64, add func(sql.NullString, string, string, string)) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT id, kind, channel, coalesce(message_id, 0), coalesce(relay_id, 0), state, created_at, sent_at, provider_id,
			error_code, error, delivery_status
		FROM outbox WHERE client_id = ? ORDER BY id`, clientID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, msgID, relayID int64
		var kind, ch, state, pid, code, reason, status string
		var created, sent sql.NullString
		if err := rows.Scan(&id, &kind, &ch, &msgID, &relayID, &state, &created, &sent, &pid, &code, &reason, &status); err != nil {
			return err
		}
		var b strings.Builder
		what := "acknowledged"
		if kind == string(envelope.KindRelay) {
			what = "relay-sent" // its text is on the relay's own line
			fmt.Fprintf(&b, "relay %d part by %s (outbox %d)", relayID, channelWord(ch), id)
		} else {
			fmt.Fprintf(&b, "%s by %s (outbox %d", kind, channelWord(ch), id)
			if msgID != 0 {
				fmt.Fprintf(&b, ", for msg %d", msgID)
			}
			b.WriteString(")")
		}
		fmt.Fprintf(&b, ": %s", state)
		if pid != "" && ch == string(envelope.SMS) {
			// A Twilio SID is opaque; a Message-ID may name a host.
			fmt.Fprintf(&b, ", provider id %s", pid)
		} else if pid != "" {
			b.WriteString(", Message-ID recorded")
		}
		if status != "" {
			fmt.Fprintf(&b, ", delivery %s", status)
		}
		failed := state == "failed" || status == "failed" || status == "undelivered"
		if failed {
			fmt.Fprintf(&b, ", %s", failureWhy(envelope.Channel(ch), code, reason))
		}
		at := created
		if sent.Valid {
			at = sent
		}
		switch {
		case failed:
			if what == "relay-sent" {
				what = "relay-failed"
			}
		case status == "delivered" || status == "read":
			if what == "relay-sent" {
				what = "relay-delivered"
			}
		}
		add(at, what, b.String(), "")
	}
	return rows.Err()
}

func timelineAlerts(ctx context.Context, tx *sql.Tx, clientID int64, add func(sql.NullString, string, string, string)) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT id, message_id, created_at, acked_at, acked_by, acked_via FROM alerts WHERE client_id = ? ORDER BY id`, clientID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, msgID int64
		var created, acked sql.NullString
		var by, via string
		if err := rows.Scan(&id, &msgID, &created, &acked, &by, &via); err != nil {
			return err
		}
		add(created, "alert", fmt.Sprintf("alert #%d raised for msg %d; on-call paged", id, msgID), "")
		add(acked, "alert", fmt.Sprintf("alert #%d acknowledged by %s (%s)", id, by, via), "")
	}
	return rows.Err()
}

func timelineRelays(ctx context.Context, tx *sql.Tx, clientID int64, add func(sql.NullString, string, string, string)) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT r.id, r.via, r.by_name, r.channel, r.state, r.reason, r.text, r.created_at, r.done_at,
			coalesce(r.digest_id, 0), coalesce(r.alert_id, 0), coalesce(r.reported_in, 0), d.created_at
		FROM relays r LEFT JOIN digests d ON d.id = r.reported_in
		WHERE r.client_id = ? ORDER BY r.id`, clientID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, digestID, alertID, reported int64
		var via, by, ch, state, reason, text string
		var created, done, shown sql.NullString
		if err := rows.Scan(&id, &via, &by, &ch, &state, &reason, &text, &created, &done, &digestID, &alertID, &reported, &shown); err != nil {
			return err
		}
		if by == "" {
			by = "a sender not on the practice's list"
		}
		var b strings.Builder
		fmt.Fprintf(&b, "relay %d from %s by %s", id, by, channelWord(via))
		if digestID != 0 {
			fmt.Fprintf(&b, " (reply address of digest %d)", digestID)
		}
		if alertID != 0 {
			fmt.Fprintf(&b, " (texting back to alert #%d)", alertID)
		}
		if state == "refused" {
			fmt.Fprintf(&b, ": refused, %s", reason)
			add(created, "relay-refused", b.String(), "")
			continue
		}
		fmt.Fprintf(&b, " to the client by %s", channelWord(ch))
		add(created, "relayed", b.String(), text)
		switch state {
		case "sent":
			add(done, "relay-done", fmt.Sprintf("relay %d: all sent", id), "")
		case "failed":
			add(done, "relay-done", fmt.Sprintf("relay %d: failed, %s", id, reason), "")
		}
		if reported != 0 {
			add(shown, "in-digest", fmt.Sprintf("relay %d shown in digest %d", id, reported), "")
		}
	}
	return rows.Err()
}
