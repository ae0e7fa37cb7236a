package gateway

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// On-call defaults.
const (
	DefaultEscalateAfter = 10 * time.Minute // OnCall.After when zero
	DefaultRepeatEvery   = 10 * time.Minute // Practice.RepeatEvery when zero
	DefaultDigestGrace   = 2 * time.Hour    // Practice.DigestGrace when zero
)

// Rotation makes the primary on-call person change every week.
type Rotation struct {
	// Start is when OnCall[0]'s first week as primary begins. Each later
	// week begins on the same weekday and wall-clock time in the practice's
	// time zone (so across a DST change a week is 167 or 169 hours), and
	// the next person in order becomes primary; the others follow
	// cyclically as backups.
	Start time.Time
}

// week returns the number of rotation weeks from Start to at (negative
// before Start), counted on the local calendar of loc.
func (r Rotation) week(at time.Time, loc *time.Location) int {
	s, a := r.Start.In(loc), at.In(loc)
	k := floorDiv(civilDay(a)-civilDay(s), 7)
	// The week's first moment, by local date and clock: time.Date keeps the
	// wall clock across DST, where adding 168h would not.
	begin := time.Date(s.Year(), s.Month(), s.Day()+7*k, s.Hour(), s.Minute(), s.Second(), s.Nanosecond(), loc)
	if a.Before(begin) {
		k--
	}
	return k
}

// civilDay numbers t's local date (days since 1970-01-01).
func civilDay(t time.Time) int {
	return int(time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Chain returns the on-call chain in paging order at moment at: the
// configured order, or, with a rotation, starting from that week's primary
// and continuing cyclically. After is filled in with its default.
func (p Practice) Chain(at time.Time) []OnCall {
	order := p.chainOrder(at)
	out := make([]OnCall, len(order))
	for i, j := range order {
		out[i] = p.OnCall[j]
		out[i].After = p.OnCall[j].after()
	}
	return out
}

// chainOrder is Chain as indexes into OnCall: what an alert keeps.
func (p Practice) chainOrder(at time.Time) []int {
	n := len(p.OnCall)
	first := 0
	if p.Rotation != nil && n > 0 {
		first = p.Rotation.week(at, p.loc()) % n
		if first < 0 {
			first += n
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = (first + i) % n
	}
	return order
}

func (o OnCall) after() time.Duration {
	if o.After <= 0 {
		return DefaultEscalateAfter
	}
	return o.After
}

func (p Practice) loc() *time.Location {
	if p.Location == nil {
		return time.UTC
	}
	return p.Location
}

func (p Practice) repeatEvery() time.Duration {
	if p.RepeatEvery <= 0 {
		return DefaultRepeatEvery
	}
	return p.RepeatEvery
}

func (p Practice) digestGrace() time.Duration {
	if p.DigestGrace <= 0 {
		return DefaultDigestGrace
	}
	return p.DigestGrace
}

// staff is someone the gateway pages: a person of the chain or the
// therapist.
type staff struct {
	name, phone, email string
	after              time.Duration
}

func (p Practice) therapist() staff {
	name := p.Therapist
	if name == "" {
		name = "the therapist"
	}
	return staff{name: name, phone: p.normPhone(p.TherapistPhone), email: p.DigestTo}
}

func (p Practice) person(i int) (staff, bool) {
	if i < 0 || i >= len(p.OnCall) {
		return staff{}, false // the chain was shortened since the alert was raised
	}
	o := p.OnCall[i]
	return staff{name: o.Name, phone: p.normPhone(o.Phone), email: o.Email, after: o.after()}, true
}

func (p Practice) normPhone(s string) string {
	if s == "" {
		return ""
	}
	if n, err := NormalizePhone(s, p.PhoneRegion); err == nil {
		return string(n)
	}
	return s
}

// staffByPhone names the chain person (first in configured order) or
// therapist whose phone is phone.
func (p Practice) staffByPhone(phone string) (string, bool) {
	for i := range p.OnCall {
		if s, _ := p.person(i); s.phone != "" && s.phone == phone {
			return s.name, true
		}
	}
	if t := p.therapist(); t.phone != "" && t.phone == phone {
		return t.name, true
	}
	return "", false
}

// staffPhones are the distinct phones of the therapist and the chain.
func (p Practice) staffPhones() []string {
	var out []string
	seen := map[string]bool{"": true}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(p.therapist().phone)
	for i := range p.OnCall {
		s, _ := p.person(i)
		add(s.phone)
	}
	return out
}

// ackText matches an acknowledgement text: "ACK", "ack 12", "Ack #12.",
// "ACK12", "acknowledged 12"; any case, surrounding space and trailing
// "." or "!" ignored. Anything longer is an ordinary message.
var ackText = regexp.MustCompile(`(?i)^ack(?:nowledged?)?\s*(?:#\s*)?(\d{1,9})?$`)

// parseAck reports whether text acknowledges an alert, and which (0: the
// only open one).
func parseAck(text string) (int64, bool) {
	s := strings.TrimSpace(strings.TrimRight(strings.TrimSpace(text), ".!"))
	m := ackText.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	if m[1] == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	return n, err == nil
}

// alert is an alert as paging needs it.
type alert struct {
	id, messageID int64
	step          int
	chain         []int
	fwd           forward
}

// pageStage is which kind of page a step sends.
type pageStage int

const (
	stageFirst    pageStage = iota // the first person, when the alert is raised
	stageNext                      // the next person in the chain
	stageEveryone                  // the whole chain and the therapist, repeating
)

// tag follows "URGENT #n" in a page's SMS and subject.
func (s pageStage) tag() string {
	switch s {
	case stageNext:
		return " (escalated)"
	case stageEveryone:
		return ", NOBODY HAS ACKNOWLEDGED"
	}
	return ""
}

// pageStep pages whoever step of a reaches and sets when the next step is
// due, all in tx: step k < len(chain) pages the k-th person; any later step
// pages the whole chain and the therapist and repeats every RepeatEvery
// until someone acknowledges. It returns the number of pages queued.
func (p Practice) pageStep(ctx context.Context, tx *sql.Tx, now time.Time, a alert, step int) (int, error) {
	var who []staff
	var wait time.Duration
	stage := stageEveryone
	if step < len(a.chain) {
		stage = stageNext
		if step == 0 {
			stage = stageFirst
		}
		if s, ok := p.person(a.chain[step]); ok {
			who, wait = []staff{s}, s.after
		}
	} else {
		for _, i := range a.chain {
			if s, ok := p.person(i); ok {
				who = append(who, s)
			}
		}
		who, wait = append(who, p.therapist()), p.repeatEvery()
	}
	pages := 0
	seen := map[string]bool{}
	for _, s := range who {
		n, err := p.page(ctx, tx, now, a, step, stage, s, seen)
		if err != nil {
			return 0, err
		}
		pages += n
	}
	next := now.Add(wait)
	if pages == 0 && stage != stageEveryone {
		next = now // nobody to reach at this step: move on at once
	}
	var exhausted any
	if stage == stageEveryone {
		exhausted = fmtTime(now)
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE alerts SET step = ?, next_escalation_at = ?, exhausted_at = coalesce(exhausted_at, ?) WHERE id = ?`,
		step, fmtTime(next), exhausted, a.id); err != nil {
		return 0, fmt.Errorf("oncall: update alert: %w", err)
	}
	event := map[pageStage]string{stageFirst: "alert:paged", stageNext: "alert:escalated", stageEveryone: "alert:exhausted"}[stage]
	return pages, audit(ctx, tx, now, event, auditIDs{message: a.messageID, alert: a.id})
}

// page queues a page of a to s by text and email, skipping addresses seen
// already in this step, and records each in alert_pages.
func (p Practice) page(ctx context.Context, tx *sql.Tx, now time.Time, a alert, step int, stage pageStage, s staff, seen map[string]bool) (int, error) {
	kind := envelope.KindOnCall
	if step > 0 {
		kind = envelope.KindEscalation
	}
	n := 0
	queue := func(r outRow) error {
		id, err := insertOutbox(ctx, tx, now, r)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO alert_pages (alert_id, step, person, channel, outbox_id, paged_at) VALUES (?, ?, ?, ?, ?, ?)`,
			a.id, step, s.name, r.channel, id, fmtTime(now)); err != nil {
			return fmt.Errorf("oncall: record page: %w", err)
		}
		n++
		return nil
	}
	if s.phone != "" && !seen["sms:"+s.phone] {
		seen["sms:"+s.phone] = true
		if err := queue(outRow{kind: kind, channel: envelope.SMS, to: s.phone, body: a.fwd.sms(stage, s.email != ""),
			alertID: a.id, messageID: a.messageID}); err != nil {
			return 0, err
		}
	}
	if s.email != "" && !seen["email:"+s.email] {
		seen["email:"+s.email] = true
		link, err := p.newAckLink(ctx, tx, now, a.id, s.name)
		if err != nil {
			return 0, err
		}
		if err := queue(outRow{kind: kind, channel: envelope.Email, to: s.email, toName: s.name,
			subject: a.fwd.title(stage), body: a.fwd.email(stage, link), alertID: a.id, messageID: a.messageID}); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// loadAlert reads alert id for paging; ok is false when it is acknowledged
// or not due at now.
func (p Practice) loadAlert(ctx context.Context, tx *sql.Tx, now time.Time, id int64) (a alert, ok bool, err error) {
	var chain, next, received, acked sql.NullString
	var reach, first string
	var clientID int64
	a.id = id
	err = tx.QueryRowContext(ctx, `
		SELECT a.step, a.chain, a.reach, a.next_escalation_at, a.acked_at, a.message_id, a.client_id,
			m.channel, m.subject, m.body, m.received_at, c.first_name
		FROM alerts a JOIN messages m ON m.id = a.message_id JOIN clients c ON c.id = a.client_id
		WHERE a.id = ?`, id).Scan(&a.step, &chain, &reach, &next, &acked, &a.messageID, &clientID,
		&a.fwd.channel, &a.fwd.subject, &a.fwd.text, &received, &first)
	if errors.Is(err, sql.ErrNoRows) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("oncall: load alert: %w", err)
	}
	if acked.Valid || !next.Valid || parseTime(next).After(now) {
		return a, false, nil
	}
	if chain.Valid {
		if err := json.Unmarshal([]byte(chain.String), &a.chain); err != nil {
			return a, false, fmt.Errorf("oncall: alert %d chain: %w", id, err)
		}
	} else {
		a.chain = make([]int, len(p.OnCall)) // raised before 0004: the configured order
		for i := range a.chain {
			a.chain[i] = i
		}
	}
	if reach == "" { // raised before 0004
		err := tx.QueryRowContext(ctx, `SELECT address FROM client_addresses WHERE client_id = ? AND channel = ? ORDER BY address LIMIT 1`,
			clientID, a.fwd.channel).Scan(&reach)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return a, false, fmt.Errorf("oncall: client address: %w", err)
		}
	}
	a.fwd.alertID, a.fwd.who, a.fwd.reach, a.fwd.received, a.fwd.loc = id, senderName(first), reach, parseTime(received), p.loc()
	return a, true, nil
}

func senderName(first string) string {
	if first == "" {
		return "an unknown sender"
	}
	return first
}

// Acknowledgement outcomes, as Result.Action values for staff texts.
const (
	ActionAlertAck        = "alert_ack"         // the alert is acknowledged; the others are told
	ActionAlertAckAlready = "alert_ack_already" // someone acknowledged it before
	ActionAlertAckAsk     = "alert_ack_ask"     // plain ACK with several alerts open: asked which
	ActionAlertAckInvalid = "alert_ack_invalid" // no such alert, or none open
)

// ackOutcome is what an acknowledgement did.
type ackOutcome struct {
	action             string
	alertID, messageID int64     // the alert acknowledged, 0 when none was found
	by                 string    // who holds the alert
	at                 time.Time // since when
	told               int       // others told it is handled
}

// acknowledge records that person acknowledged alert id (via "sms" or
// "link"), stops its escalation, and tells everyone else already paged
// for it.
func (p Practice) acknowledge(ctx context.Context, tx *sql.Tx, now time.Time, id int64, person, via string) (ackOutcome, error) {
	var acked sql.NullString
	var by string
	var msgID int64
	err := tx.QueryRowContext(ctx, `SELECT acked_at, acked_by, message_id FROM alerts WHERE id = ?`, id).Scan(&acked, &by, &msgID)
	if errors.Is(err, sql.ErrNoRows) {
		return ackOutcome{action: ActionAlertAckInvalid}, nil
	}
	if err != nil {
		return ackOutcome{}, fmt.Errorf("oncall: find alert: %w", err)
	}
	if acked.Valid {
		return ackOutcome{action: ActionAlertAckAlready, alertID: id, messageID: msgID, by: by, at: parseTime(acked)}, nil
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE alerts SET acked_at = ?, acked_by = ?, acked_via = ?, next_escalation_at = NULL WHERE id = ?`,
		fmtTime(now), person, via, id); err != nil {
		return ackOutcome{}, fmt.Errorf("oncall: acknowledge: %w", err)
	}
	if err := audit(ctx, tx, now, "alert:acked:"+via, auditIDs{message: msgID, alert: id}); err != nil {
		return ackOutcome{}, err
	}
	// A page still waiting for its next attempt would wake someone for
	// nothing; one being sent right now is left to finish.
	if _, err := tx.ExecContext(ctx, `
		UPDATE outbox SET state = 'failed', error_code = 'cancelled', error = 'alert acknowledged'
		WHERE alert_id = ? AND kind IN ('oncall', 'escalation') AND state = 'pending'`, id); err != nil {
		return ackOutcome{}, fmt.Errorf("oncall: cancel pages: %w", err)
	}
	// Everyone else paged hears once, by text if they were paged by text.
	rows, err := tx.QueryContext(ctx, `
		SELECT p.person, p.channel, o.recipient FROM alert_pages p JOIN outbox o ON o.id = p.outbox_id
		WHERE p.alert_id = ? AND p.person <> ? ORDER BY p.channel DESC, p.id`, id, person) // sms before email
	if err != nil {
		return ackOutcome{}, fmt.Errorf("oncall: paged: %w", err)
	}
	type contact struct{ channel, to string }
	var order []string
	told := map[string]contact{}
	for rows.Next() {
		var name string
		var c contact
		if err := rows.Scan(&name, &c.channel, &c.to); err != nil {
			rows.Close()
			return ackOutcome{}, fmt.Errorf("oncall: paged: %w", err)
		}
		if _, ok := told[name]; !ok {
			told[name] = c
			order = append(order, name)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ackOutcome{}, fmt.Errorf("oncall: paged: %w", err)
	}
	text := fmt.Sprintf("Alert #%d is handled: %s acknowledged at %s. No action needed.", id, person, p.clock(now))
	for _, name := range order {
		c := told[name]
		r := outRow{kind: envelope.KindNotice, channel: envelope.Channel(c.channel), to: c.to, body: text,
			alertID: id, messageID: msgID}
		if r.channel == envelope.Email {
			r.toName, r.subject = name, fmt.Sprintf("Alert #%d is handled", id)
		}
		if _, err := insertOutbox(ctx, tx, now, r); err != nil {
			return ackOutcome{}, err
		}
	}
	return ackOutcome{action: ActionAlertAck, alertID: id, messageID: msgID, by: person, at: now, told: len(order)}, nil
}

// clock is a time of day as staff read it ("2:05 PM").
func (p Practice) clock(t time.Time) string { return t.In(p.loc()).Format("3:04 PM") }

// ackBySMS handles an ACK text from a staff phone: it picks the alert
// (the only open one when id is 0), acknowledges it, and returns the
// outcome and the reply to text back.
func (p Practice) ackBySMS(ctx context.Context, tx *sql.Tx, now time.Time, id int64, person string) (ackOutcome, string, error) {
	if id == 0 {
		open, err := openAlerts(ctx, tx)
		if err != nil {
			return ackOutcome{}, "", err
		}
		switch len(open) {
		case 0:
			return ackOutcome{action: ActionAlertAckInvalid}, "No alert is open: nothing to acknowledge.", nil
		case 1:
			id = open[0]
		default:
			return ackOutcome{action: ActionAlertAckAsk}, askWhich(open), nil
		}
	}
	o, err := p.acknowledge(ctx, tx, now, id, person, "sms")
	if err != nil {
		return o, "", err
	}
	var reply string
	switch o.action {
	case ActionAlertAckInvalid:
		return o, fmt.Sprintf("There is no alert #%d. Nothing was acknowledged.", id), nil
	case ActionAlertAckAlready:
		if o.by == person {
			reply = fmt.Sprintf("You already acknowledged alert #%d at %s.", id, p.clock(o.at))
		} else {
			reply = fmt.Sprintf("Alert #%d was already acknowledged by %s at %s. No action needed.", id, o.by, p.clock(o.at))
		}
	default:
		reply = fmt.Sprintf("Thank you: alert #%d is yours. Paging has stopped", id)
		if o.told > 0 {
			reply += " and the others were told"
		}
		reply += "."
	}
	return o, reply, nil
}

func openAlerts(ctx context.Context, tx *sql.Tx) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM alerts WHERE acked_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("oncall: open alerts: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("oncall: open alerts: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// askWhich is the reply to a plain ACK when several alerts are open.
func askWhich(open []int64) string {
	nums := make([]string, len(open))
	for i, id := range open {
		nums[i] = fmt.Sprintf("#%d", id)
	}
	s := fmt.Sprintf("%d alerts are open: %s. ", len(open), strings.Join(nums, ", "))
	if len(open) == 2 {
		return s + fmt.Sprintf("Reply ACK %d or ACK %d.", open[0], open[1])
	}
	return s + fmt.Sprintf("Reply ACK and the number, e.g. ACK %d.", open[0])
}

// pageFailed brings forward to now the next escalation of the alert that
// outbox row id paged: nobody can acknowledge a page that never arrived.
// Only a page of the alert's current step counts (a late report about an
// earlier person must not skip the current one), only before the whole
// chain was paged (there every repeat would fail again at once), and a
// failed email only when that person had no text page in the step. It
// reports whether an alert moved.
func pageFailed(ctx context.Context, tx *sql.Tx, now time.Time, outboxID int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `
		UPDATE alerts SET next_escalation_at = ?1
		WHERE acked_at IS NULL AND exhausted_at IS NULL AND next_escalation_at > ?1 AND EXISTS (
			SELECT 1 FROM alert_pages p WHERE p.outbox_id = ?2 AND p.alert_id = alerts.id AND p.step = alerts.step
			AND (p.channel = 'sms' OR NOT EXISTS (SELECT 1 FROM alert_pages q
				WHERE q.alert_id = p.alert_id AND q.step = p.step AND q.person = p.person AND q.channel = 'sms')))`,
		fmtTime(now), outboxID)
	if err != nil {
		return false, fmt.Errorf("oncall: escalate failed page: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}
