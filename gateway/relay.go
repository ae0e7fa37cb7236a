package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/policies"
)

// Relay outcomes, as Result.Action values.
const (
	ActionRelay        = "relay"         // the reply is queued to the client
	ActionRelayRefused = "relay_refused" // not relayed; whoever may know was told why
)

// Why a relay was refused, as stored in relays.reason. None carries
// content.
const (
	refuseAutomated = "automated"      // an auto-reply or bounce reached a reply address
	refuseBadToken  = "bad-token"      // the reply address does not verify
	refuseSender    = "unknown-sender" // not the therapist or an on-call person
	refuseAuth      = "auth-failed"    // the mailbox server's DMARC/DKIM/SPF check failed
	refuseExpired   = "expired"        // the reply address is past Practice.RelayTTL
	refuseNoClient  = "unknown-client" // the token names no client in this database
	refuseEmpty     = "empty"          // nothing left after the quote and signature
	refuseNoAddress = "no-address"     // the client has no channel to answer on
	refuseOptedOut  = "opted-out"      // the client opted out of that channel
	refuseTooLong   = "too-long"       // over Practice.RelayMaxSegments
	refuseNoAlert   = "no-alert"       // a staff text with no recent alert to answer
	refuseNoToken   = "no-token"       // staff answered a digest or notice, not a reply address
	refuseQuoted    = "quoted-digest"  // the text still holds the quoted digest: other clients' messages
)

// digestHeading matches the first line of a digest, as a quote of it
// would carry it.
var digestHeading = regexp.MustCompile(`Check-in (Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day \d{1,2} [A-Z][a-z]+ \d{4}, \d{2}:\d{2}`)

const (
	// relayPartGap is how long after one part of a split SMS relay is
	// accepted the next is sent (2 s): the next is only queued once the
	// earlier is accepted, so the outbox's parallel sends cannot reorder
	// them, and the gap keeps carriers from doing so.
	relayPartGap = 2 * time.Second
	// smsRelayWindow is how recent a page must be for a staff text to be
	// taken as a reply to its client (24 h).
	smsRelayWindow = 24 * time.Hour
	// refusalNoticeLimit caps explanations of refused relays from senders
	// who are not staff at this many an hour, so someone mailing reply
	// addresses cannot flood the therapist's inbox.
	refusalNoticeLimit = 5
)

// relayRequest is a staff member's reply on its way to a client.
type relayRequest struct {
	via        envelope.Channel // how it came
	providerID envelope.ProviderID
	received   time.Time
	sender     string // normalised address or phone
	person     string // staff name; "" when the sender is not staff
	trusted    bool   // staff, and the mailbox server found nothing wrong
	requestID  string // Message-ID, to thread the confirmation
	text       string
	clientID   int64
	digestID   int64
	alertID    int64
}

// staffByEmail names the therapist or on-call person whose address is
// addr (normalised); the therapist's address is Practice.DigestTo.
func (p Practice) staffByEmail(addr string) (string, bool) {
	if addr == "" {
		return "", false
	}
	same := func(s string) bool {
		a, err := NormalizeEmail(s)
		return err == nil && string(a) == addr
	}
	if same(p.DigestTo) {
		return p.therapist().name, true
	}
	for _, o := range p.OnCall {
		if o.Email != "" && same(o.Email) {
			return o.Name, true
		}
	}
	return "", false
}

func (p Practice) relayMaxSegments() int {
	if p.RelayMaxSegments <= 0 {
		return DefaultRelayMaxSegments
	}
	return p.RelayMaxSegments
}

// receiveRelay handles mail to a per-client reply address. It never files
// a client message and never acknowledges: either the reply is queued to
// the client, or it is refused and whoever may know is told why. A
// message seen before returns its first result.
func (d *Dispatcher) receiveRelay(ctx context.Context, in envelope.Inbound, addr string) (Result, error) {
	person, staff := d.Practice.staffByEmail(addr)
	req := relayRequest{via: envelope.Email, providerID: in.ProviderID, received: in.ReceivedAt, sender: addr,
		person: person, trusted: staff && in.AuthFailed == "", requestID: in.MessageID, text: strings.TrimSpace(in.Text)}
	var r Result
	var queued bool
	err := d.Store.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		if r, err = seenBefore(ctx, tx, in); err != nil || r.Duplicate {
			return err
		}
		key, err := d.Practice.relayKey(ctx, tx, now, false)
		if err != nil {
			return err
		}
		t, ok := parseRelayToken(key, in.RelayToken)
		if ok {
			req.clientID, req.digestID = t.clientID, t.digestID
		}
		// The most telling reason first; a sender who is not staff learns
		// nothing either way, since only the therapist is told.
		reason := ""
		switch {
		case in.Automated:
			reason = refuseAutomated
		case in.RelayToken == "":
			reason = refuseNoToken
		case !ok:
			reason = refuseBadToken
		case !staff:
			reason = refuseSender
		case in.AuthFailed != "":
			reason = refuseAuth
		case !now.Before(t.expires):
			reason = refuseExpired
		}
		r, queued, err = d.relay(ctx, tx, now, req, reason)
		return err
	})
	return d.relayDone(in, r, queued, err)
}

// receiveSMSRelay handles a text from a staff phone that is not an ACK,
// with Practice.SMSRelay on: it is relayed to the client of the latest
// alert that phone was paged by text for in the last 24 hours.
func (d *Dispatcher) receiveSMSRelay(ctx context.Context, in envelope.Inbound, addr, person string) (Result, error) {
	req := relayRequest{via: envelope.SMS, providerID: in.ProviderID, received: in.ReceivedAt, sender: addr,
		person: person, trusted: true, text: strings.TrimSpace(in.Text)}
	var r Result
	var queued bool
	err := d.Store.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		if r, err = seenBefore(ctx, tx, in); err != nil || r.Duplicate {
			return err
		}
		err = tx.QueryRowContext(ctx, `
			SELECT a.id, a.client_id FROM alert_pages p JOIN outbox o ON o.id = p.outbox_id JOIN alerts a ON a.id = p.alert_id
			WHERE p.channel = 'sms' AND o.recipient = ? AND p.paged_at >= ?
			ORDER BY p.paged_at DESC, p.id DESC LIMIT 1`, addr, fmtTime(now.Add(-smsRelayWindow))).Scan(&req.alertID, &req.clientID)
		reason := ""
		if errors.Is(err, sql.ErrNoRows) {
			reason = refuseNoAlert
		} else if err != nil {
			return fmt.Errorf("relay: find alert: %w", err)
		}
		r, queued, err = d.relay(ctx, tx, now, req, reason)
		return err
	})
	return d.relayDone(in, r, queued, err)
}

// answersStaffMail reports whether in answers (In-Reply-To or References)
// a digest or notice the gateway mailed to staff.
func (s *Store) answersStaffMail(ctx context.Context, in envelope.Inbound) (bool, error) {
	ids := append([]string(nil), in.References...)
	if in.MessageID != "" {
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == in.MessageID })
	}
	if len(ids) == 0 {
		return false, nil
	}
	ids = ids[max(0, len(ids)-20):] // the nearest ancestors are enough
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = strings.Trim(id, "<> ")
	}
	var n int
	err := s.db.QueryRowContext(ctx, `
		SELECT count(*) FROM outbox WHERE channel = 'email' AND kind IN ('digest', 'notice')
		AND provider_id IN (?`+strings.Repeat(", ?", len(ids)-1)+`)`, args...).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("dispatch: staff mail: %w", err)
	}
	return n > 0, nil
}

// relayDone wakes the outbox and logs, after the commit.
func (d *Dispatcher) relayDone(in envelope.Inbound, r Result, queued bool, err error) (Result, error) {
	if err != nil {
		return Result{}, err
	}
	if queued && d.Outbox != nil {
		d.Outbox.Kick()
	}
	log := d.Logger
	if in.Channel == envelope.SMS {
		log = log.With("provider_id", in.ProviderID)
	}
	log.Info("relay received", "channel", in.Channel, "relay_id", r.RelayID, "client_id", r.ClientID,
		"alert_id", r.AlertID, "action", r.Action, "duplicate", r.Duplicate)
	return r, nil
}

// seenBefore returns the first result for a relay request seen before, as
// a relay or (before relaying applied to it) as a client message;
// Duplicate is false when it is new.
func seenBefore(ctx context.Context, tx *sql.Tx, in envelope.Inbound) (Result, error) {
	r, err := lookup(ctx, tx, in.Channel, in.ProviderID)
	if err == nil {
		r.Duplicate = true
		return r, nil
	} else if !errors.Is(err, ErrNotFound) {
		return Result{}, fmt.Errorf("relay: dedupe: %w", err)
	}
	var state string
	err = tx.QueryRowContext(ctx, `
		SELECT id, coalesce(client_id, 0), coalesce(alert_id, 0), state FROM relays WHERE via = ? AND provider_id = ?`,
		in.Channel, string(in.ProviderID)).Scan(&r.RelayID, &r.ClientID, &r.AlertID, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return Result{}, nil
	}
	if err != nil {
		return r, fmt.Errorf("relay: dedupe: %w", err)
	}
	r.Action, r.Duplicate = ActionRelay, true
	if state == "refused" {
		r.Action = ActionRelayRefused
	}
	return r, nil
}

// relayClient is the client a relay goes to.
type relayClient struct {
	name          string
	channel, addr string
}

// relay records req and, unless reason (or a check here) refuses it,
// queues it to the client on the channel they last used and resets their
// quiet period. A refusal is explained once: to the sender when they are
// trusted staff, else to the therapist. queued reports new outbox rows.
func (d *Dispatcher) relay(ctx context.Context, tx *sql.Tx, now time.Time, req relayRequest, reason string) (r Result, queued bool, err error) {
	p := d.Practice
	r = Result{ClientID: req.clientID, AlertID: req.alertID}
	var c relayClient
	if reason == "" || (req.trusted && req.clientID != 0) {
		var ok bool
		if c, ok, err = loadRelayClient(ctx, tx, req.clientID); err != nil {
			return r, false, err
		}
		if !ok {
			r.ClientID = 0
			if reason == "" {
				reason = refuseNoClient
			}
		}
	}
	if !req.trusted || reason == refuseNoClient {
		c.name = "" // the sender may not learn who the address was for
	}
	var parts []string
	var tooLong int
	if reason == "" {
		reason, parts, tooLong, err = d.relayChecks(ctx, tx, req, c)
		if err != nil {
			return r, false, err
		}
	}
	state := "queued"
	if reason != "" {
		state = "refused"
	}
	text := req.text
	if state == "refused" {
		text, parts = "", nil // a refused reply is not kept
	}
	notifyCh, notifyTo := envelope.Email, p.DigestTo
	if req.trusted {
		notifyCh, notifyTo = req.via, req.sender
	}
	received := req.received
	if received.IsZero() {
		received = now
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO relays (via, provider_id, received_at, client_id, digest_id, alert_id, by_name, sender, trusted,
			notify_channel, notify_to, request_id, channel, recipient, state, reason, text, parts, tz, created_at, done_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		req.via, string(req.providerID), fmtTime(received), nullID(r.ClientID), nullID(req.digestID), nullID(req.alertID),
		req.person, req.sender, req.trusted, notifyCh, notifyTo, req.requestID, c.channel, c.addr, state, reason, text,
		mustJSON(nonNil(parts)), p.loc().String(), fmtTime(now), doneAt(state, now))
	if err != nil {
		return r, false, fmt.Errorf("relay: insert: %w", err)
	}
	if r.RelayID, err = res.LastInsertId(); err != nil {
		return r, false, err
	}
	ids := auditIDs{client: r.ClientID, alert: req.alertID, digest: req.digestID, relay: r.RelayID}
	if state == "refused" {
		r.Action = ActionRelayRefused
		if err := audit(ctx, tx, now, "relay:refused:"+reason, ids); err != nil {
			return r, false, err
		}
		queued, err = d.explainRefusal(ctx, tx, now, req, r.RelayID, reason, c.name, tooLong)
		return r, queued, err
	}
	r.Action = ActionRelay
	if err := audit(ctx, tx, now, "relay:queued", ids); err != nil {
		return r, false, err
	}
	if err := queueRelay(ctx, tx, now, r.RelayID, r.ClientID, c, req.text, parts); err != nil {
		return r, false, err
	}
	// The client hears from a person now: their next message gets a full
	// acknowledgement, not silence.
	if _, err := tx.ExecContext(ctx, `UPDATE clients SET last_full_ack_at = NULL, last_ack_at = NULL WHERE id = ?`, r.ClientID); err != nil {
		return r, false, fmt.Errorf("relay: reset quiet period: %w", err)
	}
	return r, true, nil
}

func doneAt(state string, now time.Time) any {
	if state == "queued" {
		return nil
	}
	return fmtTime(now)
}

// quotesDigest reports whether text holds part of a digest: its heading
// or a reply address.
func (p Practice) quotesDigest(text string) bool {
	if digestHeading.MatchString(text) {
		return true
	}
	local, _, ok := strings.Cut(p.address(), "@")
	return ok && strings.Contains(strings.ToLower(text), local+relayTag)
}

// loadRelayClient reads the client's name and the channel and address
// they last wrote from.
func loadRelayClient(ctx context.Context, tx *sql.Tx, id int64) (relayClient, bool, error) {
	var c relayClient
	if id == 0 {
		return c, false, nil
	}
	err := tx.QueryRowContext(ctx, `SELECT first_name, last_channel, last_address FROM clients WHERE id = ?`, id).
		Scan(&c.name, &c.channel, &c.addr)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("relay: find client: %w", err)
	}
	if c.channel != "" && c.addr == "" { // last wrote before 0005
		err := tx.QueryRowContext(ctx, `SELECT address FROM client_addresses WHERE client_id = ? AND channel = ? ORDER BY address LIMIT 1`,
			id, c.channel).Scan(&c.addr)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return c, false, fmt.Errorf("relay: client address: %w", err)
		}
	}
	return c, true, nil
}

// relayChecks decides whether an authorised reply can go: it has text,
// the client can be reached and has not opted out, and a text fits the
// segment limit. It returns the refusal reason or the SMS parts.
func (d *Dispatcher) relayChecks(ctx context.Context, tx *sql.Tx, req relayRequest, c relayClient) (reason string, parts []string, segments int, err error) {
	ch := envelope.Channel(c.channel)
	switch {
	case req.text == "":
		return refuseEmpty, nil, 0, nil
	case !ch.Valid() || c.addr == "":
		return refuseNoAddress, nil, 0, nil
	}
	if d.Practice.quotesDigest(req.text) {
		// Trimming the quote failed: sending would pass other clients'
		// messages to this one.
		return refuseQuoted, nil, 0, nil
	}
	out, err := isOptedOut(ctx, tx, ch, c.addr)
	if err != nil || out {
		return refuseOptedOut, nil, 0, err
	}
	if ch != envelope.SMS {
		return "", nil, 0, nil
	}
	if n, _ := policies.Segments(req.text); n > d.Practice.relayMaxSegments() {
		return refuseTooLong, nil, n, nil
	}
	return "", splitSMS(req.text), 0, nil
}

// queueRelay queues the reply to the client: the first part of an SMS
// relay (the next is queued when it is accepted), or one email threaded
// to the client's last message.
func queueRelay(ctx context.Context, tx *sql.Tx, now time.Time, relayID, clientID int64, c relayClient, text string, parts []string) error {
	row := outRow{kind: envelope.KindRelay, channel: envelope.Channel(c.channel), to: c.addr, toName: c.name,
		clientID: clientID, relayID: relayID, body: text}
	if row.channel == envelope.SMS {
		row.body = parts[0]
		_, err := insertOutbox(ctx, tx, now, row)
		return err
	}
	var subject, msgID, refs string
	err := tx.QueryRowContext(ctx, `
		SELECT subject, email_id, refs FROM messages WHERE client_id = ? AND channel = 'email' AND automated = 0
		ORDER BY received_at DESC, id DESC LIMIT 1`, clientID).Scan(&subject, &msgID, &refs)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("relay: last email: %w", err)
	}
	row.subject = replySubject(subject)
	row.refs = parseStrings(refs)
	if msgID != "" {
		row.inReplyTo = msgID
		row.refs = append(row.refs, msgID)
	}
	_, err = insertOutbox(ctx, tx, now, row)
	return err
}

// explainRefusal queues one short explanation of a refused relay: to a
// trusted sender by the way they wrote, naming the client when known;
// otherwise to the therapist, naming nobody, at most refusalNoticeLimit an
// hour. Mail that was automatic is not answered at all.
func (d *Dispatcher) explainRefusal(ctx context.Context, tx *sql.Tx, now time.Time, req relayRequest, relayID int64, reason, name string, segments int) (bool, error) {
	p := d.Practice
	if reason == refuseAutomated {
		return false, nil
	}
	row := outRow{kind: envelope.KindNotice, relayID: relayID}
	if req.trusted {
		row.channel, row.to = req.via, req.sender
	} else {
		if p.DigestTo == "" {
			return false, nil
		}
		var n int
		if err := tx.QueryRowContext(ctx, `
			SELECT count(*) FROM outbox o JOIN relays r ON r.id = o.relay_id
			WHERE o.kind = 'notice' AND r.state = 'refused' AND r.trusted = 0 AND o.created_at > ?`,
			fmtTime(now.Add(-time.Hour))).Scan(&n); err != nil {
			return false, fmt.Errorf("relay: count notices: %w", err)
		}
		if n >= refusalNoticeLimit {
			return false, nil
		}
		row.channel, row.to, row.toName = envelope.Email, p.DigestTo, p.Therapist
	}
	row.body = refusalText(reason, name, segments, p.relayMaxSegments(), p.relayTTL())
	if row.channel == envelope.Email {
		row.subject = "Reply not sent"
		if name != "" {
			row.subject = "Reply to " + name + ": not sent"
		}
		if req.trusted && req.requestID != "" {
			row.inReplyTo, row.refs = req.requestID, []string{req.requestID}
		}
	}
	_, err := insertOutbox(ctx, tx, now, row)
	return err == nil, err
}

// refusalText explains a refusal in a line or two. name is "" when the
// reader may not learn who the reply was for.
func refusalText(reason, name string, segments, limit int, ttl time.Duration) string {
	who := "the client"
	if name != "" {
		who = name
	}
	switch reason {
	case refuseSender:
		return "A reply sent to a client reply address was not relayed: the sender is not on the practice's list of therapist and on-call addresses. Nothing was sent to the client or to the sender."
	case refuseAuth:
		return "A reply sent to a client reply address was not relayed: the practice's mail server could not confirm it came from the address it claims (a DMARC, DKIM or SPF check failed). Nothing was sent to the client. If you sent it, check your mail settings and send it again."
	case refuseBadToken:
		return "A reply was sent to a client reply address that is not valid (mistyped, or from another system), so it was not relayed. Nothing was sent to anyone. Use the reply address under the client's name in your latest digest."
	case refuseExpired:
		return fmt.Sprintf("Not sent to %s: that reply address has expired (they work for %d days). Nothing was sent. Use the reply address in your latest digest.", who, int(ttl.Hours()/24))
	case refuseNoClient:
		return "Not sent: the reply address names a client this gateway does not know. Nothing was sent."
	case refuseEmpty:
		return fmt.Sprintf("Not sent to %s: the reply had no text once the quoted digest and signature were taken off. Write above the quoted part and send it again.", who)
	case refuseQuoted:
		return fmt.Sprintf("Not sent to %s: the reply still holds the quoted digest, which has other clients' messages in it. Delete the quoted part and send it again.", who)
	case refuseNoAddress:
		return fmt.Sprintf("Not sent to %s: there is no number or address to answer on. Nothing was sent.", who)
	case refuseOptedOut:
		return fmt.Sprintf("Not sent to %s: they have opted out of messages from the practice on the channel they last used (STOP). Nothing was sent.", who)
	case refuseTooLong:
		return fmt.Sprintf("Not sent to %s: the reply would take %d text messages, over the limit of %d. Shorten it and send it again.", who, segments, limit)
	case refuseNoToken:
		return "Your email went to the practice mailbox, not to a client, so nothing was passed on. To answer a client, write to the reply address under their name in the digest (\"Reply to ...\")."
	case refuseNoAlert:
		return "This text was not passed on: you were not paged for an alert in the last 24 hours, so there is no client to reply to. To acknowledge an alert, reply ACK and its number."
	}
	return fmt.Sprintf("Not sent to %s. Nothing was sent.", who)
}

// relayOutcome moves the relay that outbox row outboxID belongs to on,
// in tx: an accepted part queues the next part, the last one marks the
// relay sent; a failure (at once or reported later: undelivered, bounced)
// marks it failed. Each change of state queues one confirmation to whoever
// asked. It reports whether it queued anything.
func relayOutcome(ctx context.Context, tx *sql.Tx, now time.Time, outboxID int64, failed bool, code, reason string) (bool, error) {
	var o relayState
	err := tx.QueryRowContext(ctx, `
		SELECT r.id, r.state, r.parts, r.channel, r.recipient, coalesce(r.client_id, 0), coalesce(r.alert_id, 0),
			r.notify_channel, r.notify_to, r.request_id, r.tz, coalesce(c.first_name, ''),
			(SELECT count(*) FROM outbox q WHERE q.relay_id = r.id AND q.kind = 'relay'),
			(SELECT count(*) FROM outbox q WHERE q.relay_id = r.id AND q.kind = 'relay' AND q.state = 'sent'
				AND q.delivery_status NOT IN ('failed', 'undelivered'))
		FROM outbox o JOIN relays r ON r.id = o.relay_id LEFT JOIN clients c ON c.id = r.client_id
		WHERE o.id = ? AND o.kind = 'relay'`, outboxID).
		Scan(&o.id, &o.state, &o.parts, &o.channel, &o.to, &o.clientID, &o.alertID, &o.notifyCh, &o.notifyTo,
			&o.requestID, &o.tz, &o.name, &o.queued, &o.reached)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("relay: outcome: %w", err)
	}
	parts := parseStrings(o.parts)
	ids := auditIDs{client: o.clientID, outbox: outboxID, relay: o.id, alert: o.alertID}
	var text string
	switch {
	case !failed && o.state != "queued":
		return false, nil
	case !failed && o.queued < len(parts):
		_, err := insertOutbox(ctx, tx, now, outRow{kind: envelope.KindRelay, channel: envelope.SMS, to: o.to, toName: o.name,
			body: parts[o.queued], clientID: o.clientID, relayID: o.id, due: now.Add(relayPartGap)})
		return err == nil, err
	case !failed:
		if _, err := tx.ExecContext(ctx, `UPDATE relays SET state = 'sent', done_at = ? WHERE id = ?`, fmtTime(now), o.id); err != nil {
			return false, fmt.Errorf("relay: mark sent: %w", err)
		}
		if err := audit(ctx, tx, now, "relay:sent", ids); err != nil {
			return false, err
		}
		text = fmt.Sprintf("Sent to %s by %s at %s.", o.who(), channelWord(o.channel), o.clock(now))
		if len(parts) > 1 {
			text = fmt.Sprintf("Sent to %s by text, in %d parts, at %s.", o.who(), len(parts), o.clock(now))
		}
	case o.state == "failed" || o.state == "refused":
		return false, nil
	default:
		// reported_in is cleared so the next digest shows the failure
		// even if an earlier one showed the relay as sent.
		if _, err := tx.ExecContext(ctx, `UPDATE relays SET state = 'failed', reason = ?, done_at = ?, reported_in = NULL WHERE id = ?`,
			failureCode(code, reason), fmtTime(now), o.id); err != nil {
			return false, fmt.Errorf("relay: mark failed: %w", err)
		}
		if err := audit(ctx, tx, now, "relay:failed", ids); err != nil {
			return false, err
		}
		// Later parts make no sense without the missing one.
		if _, err := tx.ExecContext(ctx, `
			UPDATE outbox SET state = 'failed', error = 'an earlier part failed' WHERE relay_id = ? AND kind = 'relay' AND state = 'pending'`,
			o.id); err != nil {
			return false, fmt.Errorf("relay: cancel parts: %w", err)
		}
		why := failureWhy(envelope.Channel(o.channel), code, reason)
		switch {
		case o.state == "sent":
			text = fmt.Sprintf("Your reply to %s by %s was not delivered after all: %s.", o.who(), channelWord(o.channel), why)
		case o.reached > 0:
			text = fmt.Sprintf("Only %d of the %d parts of your reply reached %s by text: %s.", o.reached, len(parts), o.who(), why)
		default:
			text = fmt.Sprintf("Not sent to %s: %s.", o.who(), why)
		}
	}
	if o.alertID != 0 {
		var acked sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT acked_at FROM alerts WHERE id = ?`, o.alertID).Scan(&acked); err != nil {
			return false, fmt.Errorf("relay: alert: %w", err)
		}
		if !acked.Valid {
			text += fmt.Sprintf(" Alert #%d is still open: reply ACK %d to stop the paging.", o.alertID, o.alertID)
		}
	}
	row := outRow{kind: envelope.KindNotice, channel: envelope.Channel(o.notifyCh), to: o.notifyTo, body: text, relayID: o.id}
	if !row.channel.Valid() || row.to == "" {
		return false, nil
	}
	if row.channel == envelope.Email {
		row.subject = fmt.Sprintf("Reply to %s: sent", o.who())
		if failed {
			row.subject = fmt.Sprintf("Reply to %s: NOT delivered", o.who())
		}
		if o.requestID != "" {
			row.inReplyTo, row.refs = o.requestID, []string{o.requestID}
		}
	}
	_, err = insertOutbox(ctx, tx, now, row)
	return err == nil, err
}

// relayState is a relay as relayOutcome reads it.
type relayState struct {
	id, clientID, alertID  int64
	state, parts           string
	channel, to, name      string
	notifyCh, notifyTo, tz string
	requestID              string
	queued                 int // relay rows in the outbox so far
	reached                int // of them, sent and not reported failed
}

func (o relayState) who() string { return senderName(o.name) }

// clock is a time of day in the practice's zone ("2:05 PM").
func (o relayState) clock(t time.Time) string {
	loc, err := time.LoadLocation(o.tz)
	if err != nil {
		loc = time.UTC
	}
	return t.In(loc).Format("3:04 PM")
}

// failureCode is what relays.reason keeps for a failed delivery.
func failureCode(code, reason string) string {
	if reason == "bounced" {
		return "bounced"
	}
	if code == "" {
		return "failed"
	}
	return code
}

// failureWhy says in words why a delivery failed, from the sender's code
// and reason (which never hold client content).
func failureWhy(ch envelope.Channel, code, reason string) string {
	switch {
	case code == optOutCode || code == "opted-out":
		if ch == envelope.SMS {
			return "the number has opted out of texts from the practice (STOP)"
		}
		return "the address has opted out of mail from the practice"
	case reason == "bounced":
		return fmt.Sprintf("the client's mail server returned it as undeliverable (%s)", code)
	case code == "21211" || code == "21614" || code == "21612" || code == "30005" || code == "30006":
		return fmt.Sprintf("the number cannot receive texts (error %s)", code)
	case code == "30003":
		return "the phone could not be reached (error 30003)"
	case code == "30007":
		return "the carrier filtered the message (error 30007)"
	case code == "gave-up":
		return "the provider kept failing, and the gateway gave up after repeated tries"
	case ch == envelope.Email && strings.HasPrefix(code, "5"):
		return fmt.Sprintf("the mail server refused it (%s)", code)
	case reason != "" && code != "":
		return fmt.Sprintf("%s (%s)", reason, code)
	case reason != "":
		return reason
	case code != "":
		return fmt.Sprintf("delivery failed (error %s)", code)
	}
	return "delivery failed"
}
