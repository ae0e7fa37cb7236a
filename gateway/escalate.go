package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/schedule"
)

const (
	// escalatorMaxWait caps the escalator's sleep (1 min): it re-reads
	// its timers from the database at least this often, so the dead-man
	// checks run and a clock change cannot strand an alert.
	escalatorMaxWait = time.Minute
	// catchUpWait (1 min) is how long after start the escalator leaves a
	// check-in with no record to the check-in runner, which fires missed
	// check-ins at start, before calling it undelivered.
	catchUpWait = time.Minute
	// deadmanSince names the checkpoint holding when the dead-man's switch
	// first ran: earlier check-ins predate the gateway and are never
	// reported.
	deadmanSince = "deadman:since"
)

// Escalator moves unacknowledged alerts along their on-call chain, serves
// the acknowledgement links, and is the dead-man's switch that texts the
// therapist and the chain when a check-in digest did not go out. Every
// timer lives in the database, so a restart continues exactly where the
// last process stopped. Its fields are set once before use.
type Escalator struct {
	Store    *Store
	Practice Practice
	Calendar *schedule.Calendar // check-ins the dead-man's switch watches; may be nil
	Outbox   *Outbox            // woken after pages are queued; may be nil
	Metrics  *Metrics           // may be nil
	Logger   *slog.Logger

	once    sync.Once
	kick    chan struct{}
	alive   atomic.Int64 // unix nanoseconds of Run's last turn
	mu      sync.Mutex
	started time.Time // first Step, by Store.Now
}

func (e *Escalator) init() {
	e.once.Do(func() {
		e.kick = make(chan struct{}, 1)
		if e.Logger == nil {
			e.Logger = slog.New(slog.DiscardHandler)
		}
	})
}

// Kick wakes Run: an alert's next step was brought forward (a page
// failed).
func (e *Escalator) Kick() {
	e.init()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Alive returns when Run last turned (zero before it started); it turns
// at least once a minute.
func (e *Escalator) Alive() time.Time {
	if n := e.alive.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Run does all due work, then sleeps until the earliest next step read
// from the database, a Kick, or a minute, until ctx is done.
func (e *Escalator) Run(ctx context.Context) error {
	e.init()
	for {
		e.alive.Store(time.Now().UnixNano())
		if _, err := e.safeStep(ctx); err != nil && ctx.Err() == nil {
			e.Logger.Error("escalation step failed", "err", err)
		}
		wait, err := e.untilNext(ctx)
		if err != nil && ctx.Err() == nil {
			e.Logger.Error("escalation timer failed", "err", err)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-e.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// safeStep is Step with a panic turned into an error; the panic value may
// hold client content, so only the stack is logged.
func (e *Escalator) safeStep(ctx context.Context) (n int, err error) {
	defer func() {
		if p := recover(); p != nil {
			e.Logger.Error("escalation panic", "stack", string(debug.Stack()))
			err = errors.New("escalation panicked")
		}
	}()
	return e.Step(ctx)
}

// untilNext is how long Run may sleep.
func (e *Escalator) untilNext(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var next sql.NullString
	err := e.Store.db.QueryRowContext(ctx, `SELECT min(next_escalation_at) FROM alerts WHERE acked_at IS NULL`).Scan(&next)
	if err != nil {
		return time.Second, fmt.Errorf("escalate: next due: %w", err)
	}
	wait := escalatorMaxWait
	if t := parseTime(next); !t.IsZero() {
		wait = min(wait, max(t.Sub(e.Store.Now()), 10*time.Millisecond))
	}
	return wait, nil
}

// Step does all work due now, once: every due alert moves one step along
// its chain (one transaction each), and overdue digests are reported. It
// returns how many alert steps and notices it made.
func (e *Escalator) Step(ctx context.Context) (int, error) {
	e.init()
	now := e.Store.Now()
	e.mu.Lock()
	if e.started.IsZero() {
		e.started = now
	}
	e.mu.Unlock()
	ids, err := e.dueAlerts(ctx, now)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		done, err := e.escalate(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("alert %d: %w", id, err))
			continue
		}
		if done {
			n++
		}
	}
	notices, err := e.checkDigest(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	n += notices
	if n > 0 && e.Outbox != nil {
		e.Outbox.Kick()
	}
	return n, errors.Join(errs...)
}

func (e *Escalator) dueAlerts(ctx context.Context, now time.Time) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := e.Store.db.QueryContext(ctx, `
		SELECT id FROM alerts WHERE acked_at IS NULL AND next_escalation_at <= ? ORDER BY next_escalation_at, id`,
		fmtTime(now))
	if err != nil {
		return nil, fmt.Errorf("escalate: due alerts: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("escalate: due alerts: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// escalate moves alert id one step, deciding from its row inside the
// transaction, so a second escalator or a restart cannot page twice.
func (e *Escalator) escalate(ctx context.Context, id int64) (bool, error) {
	var step, pages int
	var moved, exhausted bool
	err := e.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		a, due, err := e.Practice.loadAlert(ctx, tx, now, id)
		if err != nil || !due {
			return err
		}
		moved, step, exhausted = true, a.step+1, a.step+1 >= len(a.chain)
		pages, err = e.Practice.pageStep(ctx, tx, now, a, step)
		return err
	})
	if err != nil || !moved {
		return false, err
	}
	e.Metrics.observeEscalation(exhausted)
	if exhausted {
		e.Logger.Error("alert unacknowledged by the whole chain: paging everyone", "alert_id", id, "step", step, "pages", pages)
	} else {
		e.Logger.Warn("alert escalated", "alert_id", id, "step", step, "pages", pages)
	}
	return true, nil
}

// checkDigest is the dead-man's switch for digests: the latest scheduled
// check-in at least DigestGrace ago must have had its digest accepted by
// the mail server (or had nothing to send) within DigestGrace; if not, the
// therapist and the chain are texted once.
func (e *Escalator) checkDigest(ctx context.Context) (int, error) {
	if e.Calendar == nil {
		return 0, nil
	}
	p := e.Practice
	grace := p.digestGrace()
	sent, overdue := 0, false
	err := e.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		since, err := deadmanStart(ctx, tx, now)
		if err != nil {
			return err
		}
		at := e.Calendar.Prev(now.Add(-grace))
		if at.IsZero() || at.Before(since) {
			return nil
		}
		key := "digest:" + at.UTC().Format(timeLayout)
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM notices WHERE key = ?`, key).Scan(&n); err != nil || n > 0 {
			return err
		}
		text, err := e.digestProblem(ctx, tx, now, at)
		if err != nil || text == "" {
			return err
		}
		overdue = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO notices (key, sent_at) VALUES (?, ?)`, key, fmtTime(now)); err != nil {
			return fmt.Errorf("escalate: record notice: %w", err)
		}
		for _, phone := range p.staffPhones() {
			if _, err := insertOutbox(ctx, tx, now, outRow{kind: envelope.KindNotice, channel: envelope.SMS, to: phone, body: text}); err != nil {
				return err
			}
			sent++
		}
		return audit(ctx, tx, now, "notice:digest", auditIDs{})
	})
	if err != nil {
		return 0, fmt.Errorf("escalate: digest check: %w", err)
	}
	if overdue {
		// With no staff phone configured, this log line is all there is.
		e.Logger.Error("check-in digest not delivered on time", "notices", sent)
	}
	return sent, nil
}

// deadmanStart returns when the dead-man's switch first ran, recording
// now on the first call.
func deadmanStart(ctx context.Context, tx *sql.Tx, now time.Time) (time.Time, error) {
	v, err := checkpoint(ctx, tx, deadmanSince)
	if err != nil || v != "" {
		return parseTime(sql.NullString{String: v, Valid: true}), err
	}
	return now, setCheckpoint(ctx, tx, now, deadmanSince, now.UTC().Format(timeLayout))
}

// digestProblem returns the notice to send about the check-in scheduled
// at, or "" when its digest is fine, not needed, or may still be on time.
func (e *Escalator) digestProblem(ctx context.Context, tx *sql.Tx, now, at time.Time) (string, error) {
	p := e.Practice
	grace := p.digestGrace()
	when := at.In(p.loc()).Format("Mon 15:04")
	var fired, state, sentAt sql.NullString
	err := tx.QueryRowContext(ctx, `
		SELECT c.fired_at, d.state, d.sent_at FROM checkins c LEFT JOIN digests d ON d.checkin_id = c.id
		WHERE c.scheduled_for = ? AND c.manual = 0`, fmtTime(at)).Scan(&fired, &state, &sentAt)
	if errors.Is(err, sql.ErrNoRows) {
		// Not run at all. A later check-in that ran covered it (missed
		// check-ins coalesce); else give the runner its start-up catch-up.
		var later int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM checkins WHERE manual = 0 AND scheduled_for > ?`,
			fmtTime(at)).Scan(&later); err != nil {
			return "", fmt.Errorf("escalate: later check-ins: %w", err)
		}
		e.mu.Lock()
		started := e.started
		e.mu.Unlock()
		if later > 0 || now.Sub(started) < catchUpWait {
			return "", nil
		}
		return fmt.Sprintf("Gateway: the %s check-in digest has not been delivered (the gateway was not running or the check-in failed). Messages are held safely.", when), nil
	}
	if err != nil {
		return "", fmt.Errorf("escalate: find check-in: %w", err)
	}
	switch {
	case !state.Valid:
		return "", nil // nothing was held: no digest is right
	case state.String == "sent":
		if t := parseTime(sentAt); t.Sub(at) > grace {
			return fmt.Sprintf("Gateway: the %s check-in digest went out late, at %s (%s).", when,
				t.In(p.loc()).Format("Mon 15:04"), lateReason(parseTime(fired), at)), nil
		}
		return "", nil
	case state.String == "failed":
		return fmt.Sprintf("Gateway: the %s check-in digest has not been delivered (the mail server refused it). Messages are held safely for the next one.", when), nil
	case now.Sub(parseTime(fired)) >= grace:
		return fmt.Sprintf("Gateway: the %s check-in digest has not been delivered yet (the mail server is not accepting it; still trying). Messages are held safely.", when), nil
	}
	return "", nil // pending, fired late at start-up: give it its grace
}

func lateReason(fired, at time.Time) string {
	if fired.Sub(at) > catchUpWait {
		return "the gateway was not running at check-in time"
	}
	return "the mail server did not accept it at first"
}
