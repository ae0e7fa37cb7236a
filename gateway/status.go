package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// statusRank orders delivery states so a late callback never moves a row
// backwards (Twilio does not promise order; PROTOCOLS §1.7).
var statusRank = map[string]int{
	"accepted": 1, "scheduled": 1, "queued": 1,
	"sending": 2,
	"sent":    3,
	// Final states.
	"delivered": 4, "undelivered": 4, "failed": 4, "read": 5, "canceled": 4,
}

// optOutCode is Twilio's "recipient unsubscribed" error.
const optOutCode = "21610"

// StatusRecorder applies delivery reports to the outbox. It implements
// envelope.StatusHandler.
type StatusRecorder struct {
	Store   *Store
	Metrics *Metrics // may be nil
	// Outbox, when set, is woken when a report queued something (a
	// relay's failure confirmation).
	Outbox *Outbox
	// OnPageFailed, when set, is called after a failed on-call page brought
	// its alert's next step forward (wire it to Escalator.Kick).
	OnPageFailed func()
}

// HandleStatus records s on the outbound row it reports. A failed or
// undelivered message is listed in the next digest; a failed on-call page
// brings its alert's next escalation step forward to now; a failed relay
// is reported to whoever sent it. Reports for unknown messages (sent by
// another system) are ignored.
func (r *StatusRecorder) HandleStatus(ctx context.Context, s envelope.Status) error {
	if _, ok := statusRank[s.State]; !ok {
		return nil // a state we do not track (e.g. receiving)
	}
	var fx effects
	var o envelope.Outbound
	err := r.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		o, fx, err = applyStatus(ctx, tx, now, s, "")
		if errors.Is(err, ErrNotFound) {
			// Not ours, or not recorded yet: markSent applies it later.
			_, err = tx.ExecContext(ctx, `
				INSERT OR IGNORE INTO early_reports (channel, provider_id, state, error_code, received_at)
				VALUES (?, ?, ?, ?, ?)`, s.Channel, string(s.ProviderID), s.State, s.ErrorCode, fmtTime(now))
		}
		return err
	})
	if err != nil {
		return err
	}
	if fx.failed {
		r.Metrics.observeFailed(o)
	}
	if fx.escalated && r.OnPageFailed != nil {
		r.OnPageFailed()
	}
	if fx.queued && r.Outbox != nil {
		r.Outbox.Kick()
	}
	return nil
}

// applyStatus records s on the outbox row it names and returns that row
// and what the report set off; ErrNotFound when no row has the id. reason,
// when set, is kept as the row's error ("bounced").
func applyStatus(ctx context.Context, tx *sql.Tx, now time.Time, s envelope.Status, reason string) (o envelope.Outbound, fx effects, err error) {
	var current string
	var alertID sql.NullInt64
	err = tx.QueryRowContext(ctx, `
		SELECT id, kind, channel, recipient, delivery_status, alert_id FROM outbox
		WHERE provider_id = ? AND channel = ?`, string(s.ProviderID), s.Channel).
		Scan(&o.ID, &o.Kind, &o.Channel, &o.To, &current, &alertID)
	if errors.Is(err, sql.ErrNoRows) {
		return o, fx, ErrNotFound
	}
	if err != nil {
		return o, fx, fmt.Errorf("status: find: %w", err)
	}
	if current != "" && statusRank[current] >= statusRank[s.State] {
		return o, fx, nil // old news
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE outbox SET delivery_status = ?, error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END,
			error = CASE WHEN ? <> '' THEN ? ELSE error END WHERE id = ?`,
		s.State, s.ErrorCode, s.ErrorCode, reason, reason, o.ID); err != nil {
		return o, fx, fmt.Errorf("status: update: %w", err)
	}
	if s.State != "failed" && s.State != "undelivered" {
		return o, fx, nil
	}
	fx.failed = true
	if s.ErrorCode == optOutCode {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO opt_outs (channel, address, created_at) VALUES (?, ?, ?)`,
			o.Channel, o.To, fmtTime(now)); err != nil {
			return o, fx, fmt.Errorf("status: opt-out: %w", err)
		}
	}
	switch o.Kind {
	case envelope.KindOnCall, envelope.KindEscalation:
		if fx.escalated, err = pageFailed(ctx, tx, now, o.ID); err != nil {
			return o, fx, err
		}
	case envelope.KindRelay:
		if fx.queued, err = relayOutcome(ctx, tx, now, o.ID, true, s.ErrorCode, reason); err != nil {
			return o, fx, err
		}
	case envelope.KindDigest:
		// The mail server took it, then bounced it: the therapist never
		// saw these messages, so they wait for the next digest.
		if err := digestReturned(ctx, tx, now, o.ID); err != nil {
			return o, fx, err
		}
	}
	return o, fx, audit(ctx, tx, now, "outbox:undelivered", auditIDs{outbox: o.ID, alert: alertID.Int64})
}

// applyEarlyReports applies delivery reports that arrived before the
// provider id was recorded.
func applyEarlyReports(ctx context.Context, tx *sql.Tx, now time.Time, ch envelope.Channel, pid envelope.ProviderID) (fx effects, err error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT state, error_code FROM early_reports WHERE channel = ? AND provider_id = ?`, ch, string(pid))
	if err != nil {
		return fx, fmt.Errorf("status: early reports: %w", err)
	}
	var reports []envelope.Status
	for rows.Next() {
		st := envelope.Status{Channel: ch, ProviderID: pid}
		if err := rows.Scan(&st.State, &st.ErrorCode); err != nil {
			rows.Close()
			return fx, fmt.Errorf("status: early reports: %w", err)
		}
		reports = append(reports, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(reports) == 0 {
		return fx, err
	}
	// Apply in rank order, as if they had come after the commit.
	slices.SortFunc(reports, func(a, b envelope.Status) int { return statusRank[a.State] - statusRank[b.State] })
	for _, st := range reports {
		_, f, err := applyStatus(ctx, tx, now, st, "")
		if err != nil {
			return fx, err
		}
		fx.add(f)
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM early_reports WHERE channel = ? AND provider_id = ?`, ch, string(pid))
	return fx, err
}

// applyBounce records a delivery status notification (RFC 3464) for our
// email whose Message-ID is of: the row's delivery failed, with the DSN's
// status code and the reason "bounced". Bounces of mail we did not send,
// or no longer keep, are ignored.
func applyBounce(ctx context.Context, tx *sql.Tx, now time.Time, of, status string) (effects, error) {
	of = strings.Trim(strings.TrimSpace(of), "<>")
	if of == "" {
		return effects{}, nil
	}
	_, fx, err := applyStatus(ctx, tx, now, envelope.Status{Channel: envelope.Email, ProviderID: envelope.ProviderID(of),
		State: "failed", ErrorCode: status}, "bounced")
	if errors.Is(err, ErrNotFound) {
		return effects{}, nil
	}
	return fx, err
}
