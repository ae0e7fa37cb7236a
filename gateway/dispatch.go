package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/policies"
	"github.com/therapistinbox/gateway/schedule"
)

// OnCall is one person in the on-call chain.
type OnCall struct {
	Name  string
	Phone string        // E.164; may be empty
	Email string        // may be empty
	After time.Duration // how long to wait for an acknowledgement before the next person; DefaultEscalateAfter when zero
}

// Practice is what the gateway knows about the practice it serves.
type Practice struct {
	Name          string // "Rivera Counselling"
	Therapist     string // "Dr. Maria Rivera"
	DigestTo      string // the therapist's address for digests
	Location      *time.Location
	CrisisLine    string // "988 (call or text)"
	Emergency     string // "911"
	UrgentKeyword string // "URGENT"
	PhoneRegion   string // "US": how national numbers are read
	OnCall        []OnCall
	EmptyDigest   bool // send a digest even when nothing is held

	// TherapistPhone (E.164, may be empty) is texted, with DigestTo
	// emailed, once the whole chain was paged without an acknowledgement,
	// and by the dead-man's switch.
	TherapistPhone string
	// RepeatEvery is how often everyone is paged again after the last
	// person; DefaultRepeatEvery when zero.
	RepeatEvery time.Duration
	// Rotation, when set, decides each week who is primary.
	Rotation *Rotation
	// AckURL is the public base URL ("https://gw.example.org") under which
	// AckHandler is mounted; when empty, page emails carry no link.
	AckURL string
	// AckKey is the HMAC key for acknowledgement links; when empty one is
	// generated once and kept in the store.
	AckKey []byte
	// DigestGrace is how late a check-in digest may be before the
	// dead-man's switch texts the staff; DefaultDigestGrace when zero.
	DigestGrace time.Duration

	// Address is the practice mailbox ("practice@example.org"). Each
	// client's section of a digest offers a reply address built from it
	// ("practice+r-<token>@example.org"); mail from DigestTo or an
	// on-call email to it is relayed to the client. Empty: no replies.
	Address string
	// RelayTTL is how long a digest's reply addresses work;
	// DefaultRelayTTL (14 days) when zero.
	RelayTTL time.Duration
	// RelayMaxSegments refuses, with an explanation to the sender, replies
	// to a client by text longer than this many SMS segments;
	// DefaultRelayMaxSegments (10) when zero.
	RelayMaxSegments int
	// SMSRelay makes a text from an on-call or therapist phone that is not
	// an ACK (or a STOP/START/HELP keyword) a reply to the client of the
	// latest alert that phone was paged for. Off: such a text is an
	// ordinary message.
	SMSRelay bool
}

// Actions the dispatcher takes on an inbound message, as stored and audited.
const (
	ActionAck       = "ack"
	ActionAckRepeat = "ack_repeat"
	ActionQuiet     = "quiet"     // within the quiet period: no reply
	ActionUrgent    = "urgent"    // alert raised, on-call paged
	ActionOptOut    = "opt_out"   // STOP: recorded, no reply (Twilio answers)
	ActionOptIn     = "opt_in"    // START: lifted, no reply (Twilio answers)
	ActionHelp      = "help"      // HELP: help wording
	ActionAutomated = "automated" // auto-reply, bounce or list: never answered
)

// Result is what the dispatcher did with one inbound message.
type Result struct {
	MessageID int64
	ClientID  int64
	AlertID   int64 // 0 unless the message raised an alert
	Action    string
	Urgent    bool
	Duplicate bool  // the message was seen before; this is the first result
	RelayID   int64 // a reply relayed (or refused) to a client; no MessageID then
}

// Dispatcher decides what happens to each inbound message. Its fields are
// set once by the caller before use.
type Dispatcher struct {
	Store    *Store
	Calendar *schedule.Calendar
	Triage   *policies.Triage
	Wording  *policies.Wording
	Ack      policies.AckPolicy
	Practice Practice
	Outbox   *Outbox  // woken after each commit; may be nil
	Metrics  *Metrics // may be nil
	Logger   *slog.Logger
}

// HandleInbound implements envelope.Handler.
func (d *Dispatcher) HandleInbound(ctx context.Context, in envelope.Inbound) error {
	_, err := d.Receive(ctx, in)
	return err
}

// Receive stores in and everything decided about it in one transaction:
// it drops duplicates, files the message under its client, asks the
// policies for a verdict, and writes the replies and forwards to the outbox.
// An ACK texted from a staff phone (a chain person's or the therapist's)
// acknowledges an alert instead and is not a client message; its Result
// has no MessageID and one of the ActionAlertAck… actions. Mail to a
// client's reply address (RelayToken set), staff mail answering a digest,
// and with Practice.SMSRelay other texts from staff phones are replies
// to relay: the Result has a RelayID and ActionRelay or
// ActionRelayRefused. A bounce (BounceOf set) also marks the email it
// reports as undelivered. It returns only after the commit.
func (d *Dispatcher) Receive(ctx context.Context, in envelope.Inbound) (Result, error) {
	if !in.Channel.Valid() {
		return Result{}, envelope.Permanent("", fmt.Sprintf("dispatch: unknown channel %q", in.Channel))
	}
	if in.ProviderID == "" {
		return Result{}, envelope.Permanent("", "dispatch: message has no provider id")
	}
	addr := normalizeSender(in.Channel, in.From, d.Practice.PhoneRegion)
	if in.Channel == envelope.Email && in.RelayToken != "" {
		// Mail to a client's reply address is never a client message,
		// whoever sent it.
		return d.receiveRelay(ctx, in, addr)
	}
	if in.Channel == envelope.Email && in.AuthFailed == "" {
		// Staff pressing Reply on a digest or a confirmation write to the
		// practice address, not to a client's: tell them, file nothing.
		if _, ok := d.Practice.staffByEmail(addr); ok {
			mis, err := d.Store.answersStaffMail(ctx, in)
			if err != nil {
				return Result{}, err
			}
			if mis {
				return d.receiveRelay(ctx, in, addr)
			}
		}
	}
	if addr == "" && in.Channel == envelope.Email {
		// Mail whose sender could not be read is still filed (and paged
		// when unsafe), under one placeholder client nobody replies to.
		addr, in.Automated = unknownSender, true
		in.Notes = append(slices.Clip(in.Notes), "no readable sender address: not acknowledged")
	}
	if addr == "" {
		return Result{}, envelope.Permanent("", "dispatch: message has no sender")
	}
	if in.Channel == envelope.SMS {
		if id, ok := parseAck(in.Text); ok {
			if person, ok := d.Practice.staffByPhone(addr); ok {
				return d.receiveAck(ctx, in, addr, person, id)
			}
		}
		if d.Practice.SMSRelay && policies.OptOutType(in.OptOut) == policies.KeywordNone &&
			policies.SMSKeyword(in.Text) == policies.KeywordNone {
			if person, ok := d.Practice.staffByPhone(addr); ok {
				return d.receiveSMSRelay(ctx, in, addr, person)
			}
		}
	}
	// Policies are pure and may be slow on long emails: run them before
	// taking the write lock.
	verdict := d.Triage.Classify(in.Subject, in.Text)
	keyword := policies.KeywordNone
	if in.Channel == envelope.SMS {
		if keyword = policies.OptOutType(in.OptOut); keyword == policies.KeywordNone {
			keyword = policies.SMSKeyword(in.Text)
		}
	}
	start := time.Now()
	var res Result
	err := d.Store.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		res, err = d.receive(ctx, tx, now, in, addr, verdict, keyword)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	if !res.Duplicate {
		if d.Outbox != nil {
			d.Outbox.Kick()
		}
		d.Metrics.observeReceived(in.Channel, res.Action, time.Since(start))
	}
	log := d.Logger
	if in.Channel == envelope.SMS {
		// A Twilio SID is opaque; an email Message-ID can carry a host or
		// personal name, so it stays out of the logs.
		log = log.With("provider_id", in.ProviderID)
	}
	log.Info("message received", "channel", in.Channel, "msg_id", res.MessageID, "client_id", res.ClientID, "action", res.Action,
		"alert_id", res.AlertID, "duplicate", res.Duplicate)
	return res, nil
}

// receiveAck handles an ACK texted from a staff phone: it is an
// acknowledgement, never a client message. The text is answered once
// however often the provider delivers it.
func (d *Dispatcher) receiveAck(ctx context.Context, in envelope.Inbound, addr, person string, id int64) (Result, error) {
	var r Result
	err := d.Store.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		if r, err = lookup(ctx, tx, in.Channel, in.ProviderID); err == nil {
			r.Duplicate = true // filed as a client message before this phone was staff
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("dispatch: dedupe: %w", err)
		}
		err = tx.QueryRowContext(ctx, `SELECT action, coalesce(alert_id, 0) FROM staff_messages WHERE channel = ? AND provider_id = ?`,
			in.Channel, in.ProviderID).Scan(&r.Action, &r.AlertID)
		if err == nil {
			r.Duplicate = true
			return nil
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("dispatch: dedupe staff: %w", err)
		}
		o, text, err := d.Practice.ackBySMS(ctx, tx, now, id, person)
		if err != nil {
			return err
		}
		r.Action, r.AlertID = o.action, o.alertID
		received := in.ReceivedAt
		if received.IsZero() {
			received = now
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO staff_messages (channel, provider_id, received_at, person, action, alert_id) VALUES (?, ?, ?, ?, ?, ?)`,
			in.Channel, in.ProviderID, fmtTime(received), person, r.Action, nullID(o.alertID)); err != nil {
			return fmt.Errorf("dispatch: record staff text: %w", err)
		}
		if err := audit(ctx, tx, now, "staff:"+r.Action, auditIDs{alert: o.alertID, message: o.messageID}); err != nil {
			return err
		}
		_, err = insertOutbox(ctx, tx, now, outRow{kind: envelope.KindNotice, channel: envelope.SMS, to: addr, body: text,
			alertID: o.alertID, messageID: o.messageID})
		return err
	})
	if err != nil {
		return Result{}, err
	}
	if !r.Duplicate {
		if d.Outbox != nil {
			d.Outbox.Kick()
		}
		if r.Action == ActionAlertAck {
			d.Metrics.observeAck("sms")
		}
	}
	d.Logger.Info("staff text received", "channel", in.Channel, "provider_id", in.ProviderID, "action", r.Action,
		"alert_id", r.AlertID, "duplicate", r.Duplicate)
	return r, nil
}

// Lookup returns what the dispatcher did with the message a channel knows
// by providerID, or ErrNotFound.
func (s *Store) Lookup(ctx context.Context, ch envelope.Channel, providerID envelope.ProviderID) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return lookup(ctx, s.db, ch, providerID)
}

func lookup(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, ch envelope.Channel, providerID envelope.ProviderID) (Result, error) {
	var r Result
	err := q.QueryRowContext(ctx, `
		SELECT m.id, m.client_id, m.action, m.urgent, coalesce(a.id, 0)
		FROM messages m LEFT JOIN alerts a ON a.message_id = m.id
		WHERE m.channel = ? AND m.provider_id = ?`,
		ch, providerID).Scan(&r.MessageID, &r.ClientID, &r.Action, &r.Urgent, &r.AlertID)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	return r, err
}

// client is a client as the dispatcher needs it.
type client struct {
	id        int64
	firstName string
	known     bool
	history   policies.AckHistory
}

func (d *Dispatcher) receive(ctx context.Context, tx *sql.Tx, now time.Time, in envelope.Inbound, addr string, verdict policies.Verdict, keyword policies.Keyword) (Result, error) {
	r, err := lookup(ctx, tx, in.Channel, in.ProviderID)
	if err == nil {
		r.Duplicate = true
		return r, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return r, fmt.Errorf("dispatch: dedupe: %w", err)
	}

	c, err := findOrCreateClient(ctx, tx, now, in.Channel, addr, firstName(in.FromName))
	if err != nil {
		return r, err
	}
	optedOut, err := isOptedOut(ctx, tx, in.Channel, addr)
	if err != nil {
		return r, err
	}

	switch {
	case keyword == policies.KeywordStop:
		r.Action = ActionOptOut
	case keyword == policies.KeywordStart:
		r.Action = ActionOptIn
	case verdict.Urgent:
		// Before Automated: an unsafe message pages on-call even when it
		// came with auto-reply headers; only the reply to it is withheld.
		r.Action = ActionUrgent
	case in.Automated:
		r.Action = ActionAutomated
	case keyword == policies.KeywordHelp:
		r.Action = ActionHelp
	}
	var ackKind policies.AckKind
	if r.Action == "" {
		ackKind = d.Ack.Decide(c.history, d.Calendar.Prev(now), now)
		switch ackKind {
		case policies.AckFirst:
			r.Action = ActionAck
			if !c.known {
				ackKind = policies.AckUnknown
			}
		case policies.AckRepeat:
			r.Action = ActionAckRepeat
		default:
			r.Action = ActionQuiet
		}
	}

	r.ClientID = c.id
	r.Urgent = verdict.Urgent
	state := "held"
	if verdict.Urgent {
		state = "urgent"
	}
	received := in.ReceivedAt
	if received.IsZero() {
		received = now
	}
	original := in.Original
	if original == in.Text {
		original = ""
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO messages (client_id, channel, provider_id, received_at, stored_at, subject, body, original,
			attachments, notes, email_id, refs, automated, state, urgent, category, evidence, confidence, action)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.id, in.Channel, in.ProviderID, fmtTime(received), fmtTime(now), in.Subject, in.Text, original,
		mustJSON(nonNil(in.Attachments)), mustJSON(nonNil(in.Notes)), in.MessageID, mustJSON(nonNil(in.References)),
		in.Automated, state, verdict.Urgent, verdict.Category, mustJSON(nonNil(verdict.Evidence)), verdict.Confidence, r.Action)
	if err != nil {
		return r, fmt.Errorf("dispatch: insert message: %w", err)
	}
	if r.MessageID, err = res.LastInsertId(); err != nil {
		return r, err
	}
	if !in.Automated {
		// What the client wrote from last is where a relayed reply goes;
		// an auto-reply from their mailbox does not change it.
		if _, err := tx.ExecContext(ctx, `UPDATE clients SET last_channel = ?, last_address = ? WHERE id = ?`,
			in.Channel, addr, c.id); err != nil {
			return r, fmt.Errorf("dispatch: update client: %w", err)
		}
	}
	ids := auditIDs{client: c.id, message: r.MessageID}
	if err := audit(ctx, tx, now, "received:"+r.Action, ids); err != nil {
		return r, err
	}
	if in.Channel == envelope.Email && in.BounceOf != "" {
		if _, err := applyBounce(ctx, tx, now, in.BounceOf, in.BounceStatus); err != nil {
			return r, err
		}
	}

	reply := replyTo(in, addr, c)
	reply.messageID = r.MessageID
	switch r.Action {
	case ActionOptOut:
		_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO opt_outs (channel, address, created_at) VALUES (?, ?, ?)`,
			in.Channel, addr, fmtTime(now))
	case ActionOptIn:
		_, err = tx.ExecContext(ctx, `DELETE FROM opt_outs WHERE channel = ? AND address = ?`, in.Channel, addr)
	case ActionUrgent:
		var paged bool
		r.AlertID, paged, err = d.raiseAlert(ctx, tx, now, in, addr, c, r.MessageID)
		if err == nil && !optedOut && !in.Automated {
			err = d.queueReply(ctx, tx, now, reply, policies.AckUrgent, paged)
		}
		if err == nil {
			err = markAcked(ctx, tx, now, c.id, true)
		}
	case ActionHelp:
		if !optedOut {
			err = d.queueReply(ctx, tx, now, reply, policies.AckHelp, false)
		}
	case ActionAck, ActionAckRepeat:
		if !optedOut {
			err = d.queueReply(ctx, tx, now, reply, ackKind, false)
		}
		if err == nil {
			err = markAcked(ctx, tx, now, c.id, r.Action == ActionAck)
		}
	}
	return r, err
}

// unknownSender files mail with no readable sender address. It is not an
// address, so nothing is ever sent to it.
const unknownSender = "(unknown sender)"

// reply is who an acknowledgement goes to and how it threads.
type reply struct {
	channel    envelope.Channel
	to, name   string
	subject    string
	inReplyTo  string
	references []string
	clientID   int64
	messageID  int64
}

func replyTo(in envelope.Inbound, addr string, c client) reply {
	r := reply{channel: in.Channel, to: addr, name: c.firstName, clientID: c.id}
	if in.Channel == envelope.Email {
		r.subject = replySubject(in.Subject)
		r.inReplyTo = in.MessageID
		r.references = append(append([]string(nil), in.References...), in.MessageID)
		if in.MessageID == "" {
			r.references = in.References
		}
	}
	return r
}

// replySubject is "Re: " + subject, without stacking prefixes.
func replySubject(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "Re: your message"
	}
	if len(s) >= 3 && strings.EqualFold(s[:3], "re:") {
		return s
	}
	return "Re: " + s
}

// placeholders are the values the wording may use at now.
func (d *Dispatcher) placeholders(now time.Time, firstName string) policies.Placeholders {
	loc := d.Practice.Location
	if loc == nil {
		loc = time.UTC
	}
	return policies.Placeholders{
		FirstName:     firstName,
		NextCheckin:   policies.SpokenTime(d.Calendar.Next(now).In(loc), now.In(loc)),
		Therapist:     d.Practice.Therapist,
		Practice:      d.Practice.Name,
		CrisisLine:    d.Practice.CrisisLine,
		Emergency:     d.Practice.Emergency,
		UrgentKeyword: d.Practice.UrgentKeyword,
	}
}

func (d *Dispatcher) queueReply(ctx context.Context, tx *sql.Tx, now time.Time, rp reply, kind policies.AckKind, onCallTold bool) error {
	p := d.placeholders(now, rp.name)
	p.OnCallTold = onCallTold
	text, err := d.Wording.Render(string(rp.channel), kind, p)
	if err != nil {
		return fmt.Errorf("dispatch: render %s: %w", kind, err)
	}
	outKind := envelope.KindAck
	switch kind {
	case policies.AckRepeat:
		outKind = envelope.KindAckRepeat
	case policies.AckUrgent:
		outKind = envelope.KindUrgentReply
	case policies.AckHelp:
		outKind = envelope.KindHelp
	}
	_, err = insertOutbox(ctx, tx, now, outRow{
		kind: outKind, channel: rp.channel, to: rp.to, toName: rp.name, subject: rp.subject, body: text,
		inReplyTo: rp.inReplyTo, refs: rp.references, clientID: rp.clientID, messageID: rp.messageID,
	})
	return err
}

// raiseAlert records an alert for an urgent message, with the on-call
// chain as it stands now, and pages the first person in it on every way
// they can be reached; paged says whether anyone was. The Escalator takes
// it from there.
func (d *Dispatcher) raiseAlert(ctx context.Context, tx *sql.Tx, now time.Time, in envelope.Inbound, addr string, c client, msgID int64) (int64, bool, error) {
	chain := d.Practice.chainOrder(now)
	res, err := tx.ExecContext(ctx, `
		INSERT INTO alerts (message_id, client_id, created_at, step, chain, reach) VALUES (?, ?, ?, 0, ?, ?)`,
		msgID, c.id, fmtTime(now), mustJSON(chain), addr)
	if err != nil {
		return 0, false, fmt.Errorf("dispatch: insert alert: %w", err)
	}
	alertID, err := res.LastInsertId()
	if err != nil {
		return 0, false, err
	}
	if err := audit(ctx, tx, now, "alert:raised", auditIDs{client: c.id, message: msgID, alert: alertID}); err != nil {
		return 0, false, err
	}
	a := alert{id: alertID, messageID: msgID, chain: chain, fwd: forward{alertID: alertID, who: senderName(c.firstName),
		channel: in.Channel, reach: addr, subject: in.Subject, text: in.Text, received: in.ReceivedAt, loc: d.Practice.loc()}}
	if a.fwd.received.IsZero() {
		a.fwd.received = now
	}
	pages, err := d.Practice.pageStep(ctx, tx, now, a, 0)
	return alertID, pages > 0, err
}

// forward is an urgent message as the on-call clinician sees it.
type forward struct {
	alertID  int64
	who      string
	channel  envelope.Channel
	reach    string
	subject  string
	text     string
	received time.Time
	loc      *time.Location
}

// onCallPreview is how much of the message the on-call SMS quotes: enough
// to judge, short enough for two segments.
const onCallPreview = 80

func (f forward) via() string {
	if f.channel == envelope.SMS {
		return "text"
	}
	return "email"
}

func (f forward) sms(stage pageStage, byEmail bool) string {
	full := ""
	if byEmail {
		full = " Full text by email."
	}
	return fmt.Sprintf("URGENT #%d%s: %s by %s: %q Reach them at %s.%s Reply ACK %d when you have it.",
		f.alertID, stage.tag(), f.who, f.via(), preview(f.text, onCallPreview), f.reach, full, f.alertID)
}

func (f forward) title(stage pageStage) string {
	return fmt.Sprintf("URGENT #%d%s: message from %s by %s", f.alertID, stage.tag(), f.who, f.via())
}

// email is the full page; link, when set, is a one-time acknowledgement
// link.
func (f forward) email(stage pageStage, link string) string {
	loc := f.loc
	if loc == nil {
		loc = time.UTC
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Alert #%d needs a clinician now.\n", f.alertID)
	switch stage {
	case stageNext:
		b.WriteString("Nobody earlier in the on-call chain has acknowledged it.\n")
	case stageEveryone:
		b.WriteString("Nobody on call has acknowledged it, so the whole on-call chain and the therapist are being paged.\n")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "From:     %s\nReach:    %s (%s)\nReceived: %s\n", f.who, f.reach, f.via(),
		f.received.In(loc).Format("Mon 2 Jan 2006 15:04 MST"))
	if f.subject != "" {
		fmt.Fprintf(&b, "Subject:  %s\n", f.subject)
	}
	fmt.Fprintf(&b, "\n%s\n\n", f.text)
	fmt.Fprintf(&b, "The client has been sent the crisis line and emergency number.\n"+
		"Acknowledge by texting ACK %d from your on-call phone, so nobody else is paged.\n", f.alertID)
	if link != "" {
		fmt.Fprintf(&b, "Or acknowledge with this one-time link (it works for 24 hours):\n%s\n", link)
	}
	return b.String()
}

// preview returns the first n characters of s on one line.
func preview(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n])) + "..."
}

func markAcked(ctx context.Context, tx *sql.Tx, now time.Time, clientID int64, full bool) error {
	q := `UPDATE clients SET last_ack_at = ? WHERE id = ?`
	if full {
		q = `UPDATE clients SET last_ack_at = ?1, last_full_ack_at = ?1 WHERE id = ?2`
	}
	if _, err := tx.ExecContext(ctx, q, fmtTime(now), clientID); err != nil {
		return fmt.Errorf("dispatch: mark acked: %w", err)
	}
	return nil
}

func findOrCreateClient(ctx context.Context, tx *sql.Tx, now time.Time, ch envelope.Channel, addr, first string) (client, error) {
	var c client
	var lastFull, lastAny sql.NullString
	err := tx.QueryRowContext(ctx, `
		SELECT c.id, c.first_name, c.known, c.last_full_ack_at, c.last_ack_at
		FROM client_addresses a JOIN clients c ON c.id = a.client_id
		WHERE a.channel = ? AND a.address = ?`, ch, addr).Scan(&c.id, &c.firstName, &c.known, &lastFull, &lastAny)
	switch {
	case err == nil:
		c.history = policies.AckHistory{LastFull: parseTime(lastFull), LastAny: parseTime(lastAny)}
		if c.firstName == "" && first != "" {
			c.firstName = first
			if _, err := tx.ExecContext(ctx, `UPDATE clients SET first_name = ? WHERE id = ?`, first, c.id); err != nil {
				return c, fmt.Errorf("dispatch: name client: %w", err)
			}
		}
		return c, nil
	case !errors.Is(err, sql.ErrNoRows):
		return c, fmt.Errorf("dispatch: find client: %w", err)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO clients (first_name, created_at) VALUES (?, ?)`, first, fmtTime(now))
	if err != nil {
		return c, fmt.Errorf("dispatch: create client: %w", err)
	}
	if c.id, err = res.LastInsertId(); err != nil {
		return c, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO client_addresses (channel, address, client_id) VALUES (?, ?, ?)`,
		ch, addr, c.id); err != nil {
		return c, fmt.Errorf("dispatch: add address: %w", err)
	}
	c.firstName = first
	return c, audit(ctx, tx, now, "client:created", auditIDs{client: c.id})
}

func isOptedOut(ctx context.Context, tx *sql.Tx, ch envelope.Channel, addr string) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM opt_outs WHERE channel = ? AND address = ?`, ch, addr).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("dispatch: opt-out: %w", err)
	}
	return n > 0, nil
}

// firstName is the first word of a display name ("Ana María Ruiz" → "Ana"),
// or "" when the name looks like an address.
func firstName(display string) string {
	f := strings.Fields(strings.Trim(display, `"' `))
	if len(f) == 0 || strings.ContainsAny(f[0], "@<>") {
		return ""
	}
	return strings.Trim(f[0], ",")
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
