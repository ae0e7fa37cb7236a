package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
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
	// OnPageFailed, when set, is called after a failed on-call page brought
	// its alert's next step forward (wire it to Escalator.Kick).
	OnPageFailed func()
}

// HandleStatus records s on the outbound row it reports. A failed or
// undelivered message is listed in the next digest; a failed on-call page
// brings its alert's next escalation step forward to now. Reports for
// unknown messages (sent by another system) are ignored.
func (r *StatusRecorder) HandleStatus(ctx context.Context, s envelope.Status) error {
	if _, ok := statusRank[s.State]; !ok {
		return nil // a state we do not track (e.g. receiving)
	}
	var failed, escalated bool
	var o envelope.Outbound
	err := r.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		var err error
		o, failed, escalated, err = applyStatus(ctx, tx, now, s)
		if errors.Is(err, ErrNotFound) {
			// Not ours, or not recorded yet: markSent applies it later.
			_, err = tx.ExecContext(ctx, `
				INSERT OR IGNORE INTO early_reports (channel, provider_id, state, error_code, received_at)
				VALUES (?, ?, ?, ?, ?)`, s.Channel, string(s.ProviderID), s.State, s.ErrorCode, fmtTime(now))
		}
		return err
	})
	if err == nil && failed {
		r.Metrics.observeFailed(o)
	}
	if err == nil && escalated && r.OnPageFailed != nil {
		r.OnPageFailed()
	}
	return err
}

// applyStatus records s on the outbox row it names and returns that row,
// whether s reports a failure, and whether that failure brought an
// alert's next step forward; ErrNotFound when no row has the id.
func applyStatus(ctx context.Context, tx *sql.Tx, now time.Time, s envelope.Status) (o envelope.Outbound, failed, escalated bool, err error) {
	var current string
	var alertID sql.NullInt64
	err = tx.QueryRowContext(ctx, `
		SELECT id, kind, channel, recipient, delivery_status, alert_id FROM outbox
		WHERE provider_id = ? AND channel = ?`, string(s.ProviderID), s.Channel).
		Scan(&o.ID, &o.Kind, &o.Channel, &o.To, &current, &alertID)
	if errors.Is(err, sql.ErrNoRows) {
		return o, false, false, ErrNotFound
	}
	if err != nil {
		return o, false, false, fmt.Errorf("status: find: %w", err)
	}
	if current != "" && statusRank[current] >= statusRank[s.State] {
		return o, false, false, nil // old news
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE outbox SET delivery_status = ?, error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END WHERE id = ?`,
		s.State, s.ErrorCode, s.ErrorCode, o.ID); err != nil {
		return o, false, false, fmt.Errorf("status: update: %w", err)
	}
	if s.State != "failed" && s.State != "undelivered" {
		return o, false, false, nil
	}
	if s.ErrorCode == optOutCode {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO opt_outs (channel, address, created_at) VALUES (?, ?, ?)`,
			o.Channel, o.To, fmtTime(now)); err != nil {
			return o, true, false, fmt.Errorf("status: opt-out: %w", err)
		}
	}
	if o.Kind == envelope.KindOnCall || o.Kind == envelope.KindEscalation {
		if escalated, err = pageFailed(ctx, tx, now, o.ID); err != nil {
			return o, true, false, err
		}
	}
	return o, true, escalated, audit(ctx, tx, now, "outbox:undelivered", auditIDs{outbox: o.ID, alert: alertID.Int64})
}

// applyEarlyReports applies delivery reports that arrived before the
// provider id was recorded, and reports whether one escalated an alert.
func applyEarlyReports(ctx context.Context, tx *sql.Tx, now time.Time, ch envelope.Channel, pid envelope.ProviderID) (escalated bool, err error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT state, error_code FROM early_reports WHERE channel = ? AND provider_id = ?`, ch, string(pid))
	if err != nil {
		return false, fmt.Errorf("status: early reports: %w", err)
	}
	var reports []envelope.Status
	for rows.Next() {
		st := envelope.Status{Channel: ch, ProviderID: pid}
		if err := rows.Scan(&st.State, &st.ErrorCode); err != nil {
			rows.Close()
			return false, fmt.Errorf("status: early reports: %w", err)
		}
		reports = append(reports, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(reports) == 0 {
		return false, err
	}
	// Apply in rank order, as if they had come after the commit.
	slices.SortFunc(reports, func(a, b envelope.Status) int { return statusRank[a.State] - statusRank[b.State] })
	for _, st := range reports {
		_, _, esc, err := applyStatus(ctx, tx, now, st)
		if err != nil {
			return false, err
		}
		escalated = escalated || esc
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM early_reports WHERE channel = ? AND provider_id = ?`, ch, string(pid))
	return escalated, err
}
