package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Outbox defaults.
const (
	DefaultConcurrency = 8
	DefaultMaxAttempts = 10
	DefaultBaseDelay   = 5 * time.Second // first retry waits up to this
	DefaultMaxDelay    = 30 * time.Minute
	DefaultSendTimeout = 60 * time.Second
	// lease is how long a claimed row is left alone. A row whose lease ran
	// out was being sent when the process died: it is tried again.
	lease = 2 * DefaultSendTimeout
	// idleWait is the longest the worker sleeps with nothing due; a commit
	// wakes it sooner through Kick.
	idleWait = 5 * time.Minute
)

// outRow is an outbound message about to be queued.
type outRow struct {
	kind                  envelope.Kind
	channel               envelope.Channel
	to, toName, subject   string
	body, html, inReplyTo string
	refs                  []string
	clientID, messageID   int64
	alertID, digestID     int64
	relayID               int64
	due                   time.Time // when it may first be sent; zero means now
}

func insertOutbox(ctx context.Context, tx *sql.Tx, now time.Time, r outRow) (int64, error) {
	due := r.due
	if due.Before(now) {
		due = now
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO outbox (kind, channel, recipient, recipient_name, subject, body, html, in_reply_to, refs,
			client_id, message_id, alert_id, digest_id, relay_id, next_attempt_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.kind, r.channel, r.to, r.toName, r.subject, r.body, r.html, r.inReplyTo, mustJSON(nonNil(r.refs)),
		nullID(r.clientID), nullID(r.messageID), nullID(r.alertID), nullID(r.digestID), nullID(r.relayID),
		fmtTime(due), fmtTime(now))
	if err != nil {
		return 0, fmt.Errorf("outbox: insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	return id, audit(ctx, tx, now, "outbox:queued:"+string(r.kind),
		auditIDs{client: r.clientID, message: r.messageID, outbox: id, alert: r.alertID, digest: r.digestID, relay: r.relayID})
}

// Outbox delivers queued rows through the channel senders: a bounded number
// at a time, retrying transient failures with exponential backoff and
// jitter, recording permanent ones. A row recorded as sent is never sent
// again.
type Outbox struct {
	Store   *Store
	Senders map[envelope.Channel]envelope.Sender
	Metrics *Metrics // may be nil
	Logger  *slog.Logger
	// OnPageFailed, when set, is called after a failed on-call page brought
	// its alert's next step forward (wire it to Escalator.Kick).
	OnPageFailed func()

	Concurrency int           // rows in flight at once
	MaxAttempts int           // then the row is recorded as failed
	BaseDelay   time.Duration // backoff start
	MaxDelay    time.Duration // backoff cap
	SendTimeout time.Duration

	kick     chan struct{}
	kickOnce sync.Once
	alive    atomic.Int64 // unix nanoseconds of the loop's last turn
}

func (o *Outbox) init() {
	o.kickOnce.Do(func() { o.kick = make(chan struct{}, 1) })
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = DefaultBaseDelay
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.SendTimeout <= 0 || o.SendTimeout > lease/2 {
		o.SendTimeout = DefaultSendTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Kick wakes the worker: new rows were committed.
func (o *Outbox) Kick() {
	o.kickOnce.Do(func() { o.kick = make(chan struct{}, 1) })
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Alive returns when the worker loop last turned (zero before it started).
func (o *Outbox) Alive() time.Time {
	if n := o.alive.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// job is a claimed row on its way to a sender.
type job struct {
	m        envelope.Outbound
	attempts int // including this one
	created  time.Time
	msgAt    time.Time // when the client's message arrived, for latency metrics
}

// Run delivers rows until ctx is done, then waits for sends in flight.
func (o *Outbox) Run(ctx context.Context) error {
	o.init()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, o.Concurrency)
	done := make(chan struct{}, 1) // a send finished: a slot is free
	for {
		o.alive.Store(time.Now().UnixNano())
		free := o.Concurrency - len(slots)
		var jobs []job
		var wait time.Duration = idleWait
		if free > 0 {
			var err error
			jobs, wait, err = o.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				o.Logger.Error("claim failed", "err", err)
				wait = time.Second
			}
		}
		for _, j := range jobs {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					<-slots
					select {
					case done <- struct{}{}:
					default:
					}
				}()
				o.deliver(ctx, j)
			}()
		}
		if free > 0 && len(jobs) == free {
			continue // there may be more due right now
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-o.kick:
		case <-done:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// claim leases up to n due rows and says how long until the next one is due.
func (o *Outbox) claim(ctx context.Context, n int) ([]job, time.Duration, error) {
	var jobs []job
	wait := idleWait
	err := o.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT o.id, o.kind, o.channel, o.recipient, o.recipient_name, o.subject, o.body, o.html,
				o.in_reply_to, o.refs, coalesce(o.client_id, 0), o.attempts, o.created_at,
				(SELECT m.received_at FROM messages m WHERE m.id = o.message_id)
			FROM outbox o
			WHERE o.state IN ('pending', 'sending') AND o.next_attempt_at <= ?
			ORDER BY o.next_attempt_at, o.id LIMIT ?`, fmtTime(now), n)
		if err != nil {
			return fmt.Errorf("outbox: claim: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var j job
			var refs string
			var created, msgAt sql.NullString
			if err := rows.Scan(&j.m.ID, &j.m.Kind, &j.m.Channel, &j.m.To, &j.m.ToName, &j.m.Subject, &j.m.Text,
				&j.m.HTML, &j.m.InReplyTo, &refs, &j.m.ClientID, &j.attempts, &created, &msgAt); err != nil {
				return fmt.Errorf("outbox: claim: %w", err)
			}
			j.m.References = parseStrings(refs)
			j.attempts++
			j.created, j.msgAt = parseTime(created), parseTime(msgAt)
			jobs = append(jobs, j)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("outbox: claim: %w", err)
		}
		rows.Close()
		for _, j := range jobs {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET state = 'sending', attempts = ?, next_attempt_at = ? WHERE id = ?`,
				j.attempts, fmtTime(now.Add(lease)), j.m.ID); err != nil {
				return fmt.Errorf("outbox: lease: %w", err)
			}
		}
		var next sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT min(next_attempt_at) FROM outbox WHERE state IN ('pending', 'sending')`).Scan(&next); err != nil {
			return fmt.Errorf("outbox: next due: %w", err)
		}
		if t := parseTime(next); !t.IsZero() {
			wait = max(t.Sub(now), 10*time.Millisecond)
		}
		return nil
	})
	return jobs, min(wait, idleWait), err
}

// deliver sends one row and records the outcome.
func (o *Outbox) deliver(ctx context.Context, j job) {
	log := o.Logger.With("outbox_id", j.m.ID, "kind", j.m.Kind, "channel", j.m.Channel, "attempt", j.attempts)
	// A send in flight finishes, and its outcome is recorded, even when
	// shutdown has begun: the owner bounds how long it waits.
	ctx = context.WithoutCancel(ctx)
	pid, err := o.send(ctx, j)
	rctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var outcome string
	var fx effects
	switch {
	case err == nil:
		outcome = "sent"
		fx, err = o.Store.markSent(rctx, j, pid)
		o.Metrics.observeSent(j, o.Store.Now())
		log.Info("outbox sent", "provider_id", string(pid))
	case envelope.IsPermanent(err) || j.attempts >= o.MaxAttempts:
		outcome = "failed"
		code, reason := failure(err, j.attempts)
		log.Error("outbox failed", "code", code, "reason", reason)
		fx, err = o.Store.markFailed(rctx, j, code, reason)
		o.Metrics.observeFailed(j.m)
	default:
		outcome = "retry"
		delay := backoff(j.attempts, o.BaseDelay, o.MaxDelay)
		log.Warn("outbox retry", "err", err, "in", delay.Round(time.Millisecond))
		err = o.Store.markRetry(rctx, j, delay, err)
		// The row may have been claimed by Flush while Run waits on its
		// lease: wake Run so it times the retry instead.
		o.Kick()
	}
	if err != nil {
		log.Error("outbox record failed", "outcome", outcome, "err", err)
	}
	if fx.escalated && o.OnPageFailed != nil {
		o.OnPageFailed()
	}
	if fx.queued {
		o.Kick() // a relay's next part or its confirmation
	}
}

// send calls the channel's sender, refusing opted-out recipients and
// turning a panic into a transient error.
func (o *Outbox) send(ctx context.Context, j job) (pid envelope.ProviderID, err error) {
	defer func() {
		if p := recover(); p != nil {
			o.Logger.Error("sender panic", "outbox_id", j.m.ID, "stack", string(debug.Stack()))
			err = fmt.Errorf("sender panic")
		}
	}()
	s := o.Senders[j.m.Channel]
	if s == nil {
		return "", envelope.Permanent("", "no sender configured for "+string(j.m.Channel))
	}
	out, err := o.Store.OptedOut(ctx, j.m.Channel, j.m.To)
	if err != nil {
		return "", err
	}
	if out {
		return "", envelope.Permanent("opted-out", "recipient opted out")
	}
	sctx, cancel := context.WithTimeout(ctx, o.SendTimeout)
	defer cancel()
	return s.Send(sctx, j.m)
}

func failure(err error, attempts int) (code, reason string) {
	var pe *envelope.PermanentError
	if errors.As(err, &pe) {
		return pe.Code, pe.Reason
	}
	return "gave-up", fmt.Sprintf("gave up after %d attempts: %v", attempts, err)
}

// backoff is exponential with full jitter: up to base·2^(attempt-1),
// capped, and never under a tenth of that.
func backoff(attempt int, base, maxDelay time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d/10 + rand.N(d-d/10+1)
}

// OptedOut reports whether address has opted out of channel.
func (s *Store) OptedOut(ctx context.Context, ch envelope.Channel, address string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM opt_outs WHERE channel = ? AND address = ?`, ch, address).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("store: opt-out: %w", err)
	}
	return n > 0, nil
}

// effects are what recording an outcome set off: an alert's next step
// brought forward, new outbox rows (a relay's next part or confirmation),
// a failure to count.
type effects struct {
	failed, escalated, queued bool
}

func (fx *effects) add(o effects) {
	fx.failed = fx.failed || o.failed
	fx.escalated = fx.escalated || o.escalated
	fx.queued = fx.queued || o.queued
}

// markSent records a send and what follows from it: a digest's messages
// are delivered, early delivery reports apply, a relay moves on.
func (s *Store) markSent(ctx context.Context, j job, pid envelope.ProviderID) (fx effects, err error) {
	err = s.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		fx = effects{}
		res, err := tx.ExecContext(ctx, `
			UPDATE outbox SET state = 'sent', sent_at = ?, provider_id = ?, error_code = '', error = ''
			WHERE id = ? AND state = 'sending'`, fmtTime(now), string(pid), j.m.ID)
		if err != nil {
			return fmt.Errorf("outbox: mark sent: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // recorded already
		}
		if j.m.Kind == envelope.KindDigest {
			if err := digestSent(ctx, tx, now, j.m.ID); err != nil {
				return err
			}
		}
		if err := audit(ctx, tx, now, "outbox:sent", auditIDs{client: j.m.ClientID, outbox: j.m.ID}); err != nil {
			return err
		}
		// Early reports first: a relay that already failed is not
		// confirmed as sent.
		early, err := applyEarlyReports(ctx, tx, now, j.m.Channel, pid)
		if err != nil {
			return err
		}
		fx.add(early)
		if j.m.Kind == envelope.KindRelay {
			queued, err := relayOutcome(ctx, tx, now, j.m.ID, false, "", "")
			fx.queued = fx.queued || queued
			return err
		}
		return nil
	})
	return fx, err
}

// markFailed records a permanent failure and what follows from it: an
// on-call page escalates its alert at once, a relay's sender is told.
func (s *Store) markFailed(ctx context.Context, j job, code, reason string) (fx effects, err error) {
	err = s.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		fx = effects{}
		res, err := tx.ExecContext(ctx, `
			UPDATE outbox SET state = 'failed', error_code = ?, error = ? WHERE id = ? AND state = 'sending'`,
			code, reason, j.m.ID)
		if err != nil {
			return fmt.Errorf("outbox: mark failed: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		fx.failed = true
		if j.m.Kind == envelope.KindDigest {
			if err := digestFailed(ctx, tx, now, j.m.ID); err != nil {
				return err
			}
		}
		if j.m.Channel == envelope.SMS && code == optOutCode {
			// Twilio holds an opt-out we never saw (e.g. STOP sent while
			// we were down): record it so nothing else is tried.
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO opt_outs (channel, address, created_at) VALUES (?, ?, ?)`,
				j.m.Channel, j.m.To, fmtTime(now)); err != nil {
				return fmt.Errorf("outbox: opt-out: %w", err)
			}
		}
		if j.m.Kind == envelope.KindOnCall || j.m.Kind == envelope.KindEscalation {
			if fx.escalated, err = pageFailed(ctx, tx, now, j.m.ID); err != nil {
				return err
			}
		}
		if j.m.Kind == envelope.KindRelay {
			if fx.queued, err = relayOutcome(ctx, tx, now, j.m.ID, true, code, reason); err != nil {
				return err
			}
		}
		return audit(ctx, tx, now, "outbox:failed", auditIDs{client: j.m.ClientID, outbox: j.m.ID})
	})
	return fx, err
}

func (s *Store) markRetry(ctx context.Context, j job, delay time.Duration, cause error) error {
	return s.batchTx(ctx, func(tx *sql.Tx, now time.Time) error {
		_, err := tx.ExecContext(ctx, `
			UPDATE outbox SET state = 'pending', next_attempt_at = ?, error = ? WHERE id = ? AND state = 'sending'`,
			fmtTime(now.Add(delay)), cause.Error(), j.m.ID)
		if err != nil {
			return fmt.Errorf("outbox: mark retry: %w", err)
		}
		return nil
	})
}

// Flush delivers every row due now and returns when none is left, for
// one-shot commands such as "gateway digest --now". Rows that fail
// transiently stay queued for the daemon.
func (o *Outbox) Flush(ctx context.Context) error {
	o.init()
	for {
		jobs, _, err := o.claim(ctx, o.Concurrency)
		if err != nil || len(jobs) == 0 {
			return err
		}
		var wg sync.WaitGroup
		for _, j := range jobs {
			wg.Go(func() { o.deliver(ctx, j) })
		}
		wg.Wait()
	}
}
