package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

const (
	// retryFirst is the wait (30 s) before the first retry of a failed check-in.
	retryFirst = 30 * time.Second
	// retryMax caps the retry wait (10 min).
	retryMax = 10 * time.Minute
	// maxWait is the longest single timer (1 min); the wait is recomputed from the
	// wall clock after each, so suspend or a clock change cannot make us miss a check-in.
	maxWait = time.Minute
	// idleWait is how long (24 h) to wait before looking again when the calendar
	// has no check-in within 400 days (a very long away period).
	idleWait = 24 * time.Hour
)

// errPanic replaces a panic's value, which may hold client content.
var errPanic = errors.New("schedule: check-in panicked")

// Runner fires check-ins at their times.
type Runner struct {
	// Calendar says when check-ins are due.
	Calendar *Calendar
	// Fire runs one check-in; at is the scheduled time. It must be idempotent for a given at.
	Fire func(ctx context.Context, at time.Time) error
	// Last returns the scheduled time of the last check-in that fired (zero if none).
	Last func(ctx context.Context) (time.Time, error)
	// Now returns the current time; it defaults to time.Now.
	Now func() time.Time
	// Logger may be nil: logs are then discarded.
	Logger *slog.Logger

	after func(time.Duration) <-chan time.Time // defaults to time.After; tests fake it
}

// Run fires, once at start, the latest check-in missed while down (Calendar.Missed(last, now));
// then loops: wait until Next, Fire it. It returns nil when ctx is done, and an error only
// if Last fails at start. A failing Fire is logged (the error only) and retried with backoff
// (30 s, doubling, capped at 10 min) until it succeeds or the next check-in is due. Panics
// in Fire are recovered, logged and retried the same way. Waiting uses a timer recomputed at
// least every minute from the wall clock, so a suspended machine or clock change does not
// make it miss a check-in; if several check-ins passed during one wait, only the latest fires.
func (r *Runner) Run(ctx context.Context) error {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	last, err := r.Last(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("schedule: last check-in: %w", err)
	}
	from := r.now()
	if at, ok := r.Calendar.Missed(last, from); ok {
		log.Info("firing missed check-in", "at", at)
		r.fire(ctx, log, at)
	}
	for ctx.Err() == nil {
		at := r.Calendar.Next(from)
		if at.IsZero() {
			if !r.waitUntil(ctx, r.now().Add(idleWait)) {
				break
			}
			from = r.now()
			continue
		}
		if !r.waitUntil(ctx, at) {
			break
		}
		// After a suspend several check-ins may have passed: fire only the latest.
		if p := r.Calendar.Prev(r.now()); p.After(at) {
			at = p
		}
		r.fire(ctx, log, at)
		from = at
	}
	return nil
}

// fire calls Fire for at until it succeeds, ctx is done or the next check-in is due.
func (r *Runner) fire(ctx context.Context, log *slog.Logger, at time.Time) {
	next := r.Calendar.Next(at)
	wait := retryFirst
	for attempt := 1; ; attempt++ {
		err := r.fireOnce(ctx, log, at)
		if err == nil {
			log.Info("check-in fired", "at", at, "attempt", attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		retry := r.now().Add(wait)
		if !next.IsZero() && !retry.Before(next) {
			log.Error("check-in failed, giving up: next check-in is due", "at", at, "attempt", attempt, "err", err)
			return
		}
		log.Warn("check-in failed, will retry", "at", at, "attempt", attempt, "retry_in", wait, "err", err)
		if !r.waitUntil(ctx, retry) {
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// fireOnce calls Fire, turning a panic into an error. The panic value is not logged, as
// it may hold client content; the stack is.
func (r *Runner) fireOnce(ctx context.Context, log *slog.Logger, at time.Time) (err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("check-in panicked", "at", at, "stack", string(debug.Stack()))
			err = errPanic
		}
	}()
	return r.Fire(ctx, at)
}

// waitUntil waits until the wall clock reaches t, in steps of at most maxWait.
// It reports false if ctx was done first.
func (r *Runner) waitUntil(ctx context.Context, t time.Time) bool {
	after := r.after
	if after == nil {
		after = time.After
	}
	for {
		if ctx.Err() != nil {
			return false
		}
		// Round(0) drops the monotonic reading so the difference follows the wall clock.
		d := t.Sub(r.now().Round(0))
		if d <= 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-after(min(d, maxWait)):
		}
	}
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
