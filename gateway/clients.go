package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// ClientAddress is one way a client reaches the practice.
type ClientAddress struct {
	Channel envelope.Channel
	Address string // normalised: E.164 or lower-cased email
}

// UpsertClient files a client from the practice's client list: the first
// of addrs already known names the client; addresses not yet known are
// added to it. Listed clients are "known": they get the first-name
// acknowledgement, not the unknown-sender one.
func (s *Store) UpsertClient(ctx context.Context, firstName string, addrs []ClientAddress) error {
	return s.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		var id int64
		for _, a := range addrs {
			err := tx.QueryRowContext(ctx, `SELECT client_id FROM client_addresses WHERE channel = ? AND address = ?`,
				a.Channel, a.Address).Scan(&id)
			if err == nil {
				break
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("store: find client: %w", err)
			}
		}
		if id == 0 {
			res, err := tx.ExecContext(ctx, `INSERT INTO clients (first_name, known, created_at) VALUES (?, 1, ?)`,
				firstName, fmtTime(now))
			if err != nil {
				return fmt.Errorf("store: create client: %w", err)
			}
			if id, err = res.LastInsertId(); err != nil {
				return err
			}
			if err := audit(ctx, tx, now, "client:listed", auditIDs{client: id}); err != nil {
				return err
			}
		} else if _, err := tx.ExecContext(ctx, `UPDATE clients SET first_name = ?, known = 1 WHERE id = ?`, firstName, id); err != nil {
			return fmt.Errorf("store: update client: %w", err)
		}
		for _, a := range addrs {
			// An address filed under another client stays there: the list
			// cannot silently move a person's messages.
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO client_addresses (channel, address, client_id) VALUES (?, ?, ?)`,
				a.Channel, a.Address, id); err != nil {
				return fmt.Errorf("store: add address: %w", err)
			}
		}
		return nil
	})
}

// Purge deletes delivered messages received before cutoff, with the
// finished outbox rows and acknowledged alerts (their pages and links) that
// point at them, old staff texts and the text of old relayed replies, and
// returns how many messages went. The audit trail (ids and times) and the
// record of each relay (who, when, to whom, how it ended) stay.
func (s *Store) Purge(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		cutoff := fmtTime(before)
		old := `SELECT id FROM messages WHERE state = 'delivered' AND received_at < ?1
			AND id NOT IN (SELECT message_id FROM alerts WHERE acked_at IS NULL)`
		oldAlerts := `SELECT id FROM alerts WHERE message_id IN (` + old + `)`
		for _, q := range []string{
			`DELETE FROM early_reports WHERE received_at < ?1`, // reports for messages that are not ours
			`DELETE FROM staff_messages WHERE received_at < ?1`,
			`DELETE FROM alert_pages WHERE alert_id IN (` + oldAlerts + `)`,
			`DELETE FROM ack_tokens WHERE alert_id IN (` + oldAlerts + `)`,
			`DELETE FROM outbox WHERE state IN ('sent', 'failed') AND created_at < ?1 AND (message_id IS NULL OR message_id IN (` + old + `))
				AND id NOT IN (SELECT outbox_id FROM alert_pages)`,
			`DELETE FROM alerts WHERE message_id IN (` + old + `)`,
			// A relay's record stays for the audit; what was said goes.
			`UPDATE relays SET text = '', parts = '[]' WHERE created_at < ?1 AND state <> 'queued' AND text <> ''`,
		} {
			if _, err := tx.ExecContext(ctx, q, cutoff); err != nil {
				return fmt.Errorf("store: purge: %w", err)
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id IN (`+old+`)
			AND id NOT IN (SELECT message_id FROM outbox WHERE message_id IS NOT NULL)`, cutoff)
		if err != nil {
			return fmt.Errorf("store: purge: %w", err)
		}
		n, _ = res.RowsAffected()
		if n > 0 {
			return audit(ctx, tx, now, "purge", auditIDs{})
		}
		return nil
	})
	return n, err
}

// DigestState returns a digest's state: pending, sent or failed.
func (s *Store) DigestState(ctx context.Context, id int64) (string, error) {
	state, _, err := s.DigestStatus(ctx, id)
	return state, err
}

// DigestStatus returns a digest's state and that of its outbox row
// (pending, sending, sent or failed).
func (s *Store) DigestStatus(ctx context.Context, id int64) (digest, outbox string, err error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err = s.db.QueryRowContext(ctx, `
		SELECT d.state, coalesce(o.state, '') FROM digests d LEFT JOIN outbox o ON o.digest_id = d.id AND o.kind = 'digest'
		WHERE d.id = ?`, id).Scan(&digest, &outbox)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	return digest, outbox, err
}
