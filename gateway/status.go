package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
}

// HandleStatus records s on the outbound row it reports. A failed or
// undelivered message is listed in the next digest; a failed on-call page
// brings its alert's next escalation step forward to now. Reports for
// unknown messages (sent by another system) are ignored.
func (r *StatusRecorder) HandleStatus(ctx context.Context, s envelope.Status) error {
	rank, ok := statusRank[s.State]
	if !ok {
		return nil // a state we do not track (e.g. receiving)
	}
	var failed bool
	var o envelope.Outbound
	err := r.Store.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		var current string
		var alertID sql.NullInt64
		err := tx.QueryRowContext(ctx, `
			SELECT id, kind, channel, recipient, delivery_status, alert_id FROM outbox
			WHERE provider_id = ? AND channel = ?`, string(s.ProviderID), s.Channel).
			Scan(&o.ID, &o.Kind, &o.Channel, &o.To, &current, &alertID)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("status: find: %w", err)
		}
		if statusRank[current] >= rank && current != "" {
			return nil // old news
		}
		if _, err := tx.ExecContext(ctx, `
			UPDATE outbox SET delivery_status = ?, error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END WHERE id = ?`,
			s.State, s.ErrorCode, s.ErrorCode, o.ID); err != nil {
			return fmt.Errorf("status: update: %w", err)
		}
		failed = s.State == "failed" || s.State == "undelivered"
		if !failed {
			return nil
		}
		if s.ErrorCode == optOutCode {
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO opt_outs (channel, address, created_at) VALUES (?, ?, ?)`,
				o.Channel, o.To, fmtTime(now)); err != nil {
				return fmt.Errorf("status: opt-out: %w", err)
			}
		}
		if o.Kind == envelope.KindOnCall || o.Kind == envelope.KindEscalation {
			// Nobody can acknowledge a page that never arrived: escalate now.
			if _, err := tx.ExecContext(ctx, `
				UPDATE alerts SET next_escalation_at = ? WHERE id = ? AND acked_at IS NULL`,
				fmtTime(now), alertID); err != nil {
				return fmt.Errorf("status: escalate: %w", err)
			}
		}
		return audit(ctx, tx, now, "outbox:undelivered", auditIDs{outbox: o.ID, alert: alertID.Int64})
	})
	if err == nil && failed {
		r.Metrics.observeFailed(o)
	}
	return err
}
