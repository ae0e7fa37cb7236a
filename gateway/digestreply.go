package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// loadRelays adds each client's replies since the last digest to their
// section (adding a section for a client with replies only).
func (d *digest) loadRelays(ctx context.Context, tx *sql.Tx, p Practice, byID map[int64]*digestClient) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT r.client_id, c.first_name, r.created_at, r.by_name, r.via, r.channel, r.state, r.reason, r.text, r.parts,
			coalesce((SELECT o.error_code || char(31) || o.error FROM outbox o WHERE o.relay_id = r.id AND o.kind = 'relay'
				AND (o.state = 'failed' OR o.delivery_status IN ('failed', 'undelivered')) ORDER BY o.id LIMIT 1), '')
		FROM relays r JOIN clients c ON c.id = r.client_id
		WHERE r.`+unreportedRelays+` ORDER BY r.id`)
	if err != nil {
		return fmt.Errorf("digest: relays: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var name, by, via, channel, state, reason, parts, failure string
		var at sql.NullString
		var r digestRelay
		if err := rows.Scan(&id, &name, &at, &by, &via, &channel, &state, &reason, &r.Text, &parts, &failure); err != nil {
			return fmt.Errorf("digest: relays: %w", err)
		}
		r.At = parseTime(at)
		code, why, _ := strings.Cut(failure, "\x1f")
		r.Summary, r.Failed = relaySummary(p, by, via, channel, state, reason, len(parseStrings(parts)), code, why)
		if state == "failed" {
			d.failedRelays++ // a refusal was explained at once; this was not expected
		}
		c := d.client(byID, id, name)
		c.Relays = append(c.Relays, r)
	}
	return rows.Err()
}

// relaySummary is one relay in a line: "You replied by text: sent".
func relaySummary(p Practice, by, via, channel, state, reason string, parts int, code, why string) (string, bool) {
	who := by
	switch {
	case by == "":
		who = "Someone not on the practice's list"
	case by == p.therapist().name:
		who = "You"
	}
	if state == "refused" {
		what := map[string]string{
			refuseSender: "the sender is not on the practice's list", refuseAuth: "the sender's mail failed the mail server's checks",
			refuseExpired: "the reply address had expired", refuseEmpty: "the reply was empty",
			refuseNoAddress: "there was no way to reach them", refuseOptedOut: "they had opted out",
			refuseTooLong: "too long for texts", refuseAutomated: "it was an automatic message",
			refuseQuoted: "it still held the quoted digest",
		}[reason]
		s := fmt.Sprintf("%s wrote to this client's reply address by %s: NOT sent", who, channelWord(via))
		switch {
		case reason == refuseSender: // said already
		case what == "":
			s += " (" + reason + ")"
		default:
			s += " (" + what + ")"
		}
		return s, true
	}
	how := channelWord(channel)
	if parts > 1 {
		how = fmt.Sprintf("text, in %d parts", parts)
	}
	s := fmt.Sprintf("%s replied by %s", who, how)
	if via == string(envelope.SMS) {
		s = fmt.Sprintf("%s replied (texting back to an alert) by %s", who, how)
	}
	if state == "failed" {
		return s + ": NOT delivered: " + failureWhy(envelope.Channel(channel), code, why), true
	}
	return s + ": sent", false
}

// addReplies gives each client in the digest a reply address (bound to
// the client and this digest), or says why there is none.
func (d *digest) addReplies(ctx context.Context, tx *sql.Tx, now time.Time, p Practice, digestID int64) error {
	if p.address() == "" {
		return nil
	}
	for _, c := range d.Clients {
		rc, ok, err := loadRelayClient(ctx, tx, c.id)
		if err != nil || !ok {
			return err
		}
		ch := envelope.Channel(rc.channel)
		if !ch.Valid() || rc.addr == "" {
			continue // only automatic mail from them: nobody to answer
		}
		name, goes := rc.name, "goes to "+rc.name+" by "+channelWord(rc.channel)
		if name == "" {
			name, goes = "this sender", "goes back by "+channelWord(rc.channel)
		}
		out, err := isOptedOut(ctx, tx, ch, rc.addr)
		if err != nil {
			return err
		}
		if out {
			c.NoReply = fmt.Sprintf("No reply is possible: %s opted out of %s from the practice.", name,
				map[envelope.Channel]string{envelope.SMS: "texts", envelope.Email: "email"}[ch])
			continue
		}
		addr, err := p.newRelayAddress(ctx, tx, now, c.id, digestID)
		if err != nil {
			return err
		}
		subject := "Reply to " + name + " by text"
		if ch == envelope.Email {
			var last string
			err := tx.QueryRowContext(ctx, `
				SELECT subject FROM messages WHERE client_id = ? AND channel = 'email' AND automated = 0
				ORDER BY received_at DESC, id DESC LIMIT 1`, c.id).Scan(&last)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("digest: last subject: %w", err)
			}
			subject = replySubject(last)
		}
		c.Reply = &digestReply{Name: name, Address: addr, Goes: goes,
			Mailto: "mailto:" + addr + "?subject=" + strings.ReplaceAll(url.QueryEscape(subject), "+", "%20")}
	}
	return nil
}
