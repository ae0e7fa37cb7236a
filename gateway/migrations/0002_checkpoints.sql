-- 0002: where each channel got to with its provider (IMAP UIDVALIDITY and
-- last UID, the newest Twilio message seen by reconciliation), so work missed
-- while the gateway was down is picked up once.
CREATE TABLE checkpoints (
	name       TEXT PRIMARY KEY,
	value      TEXT NOT NULL,
	updated_at TEXT NOT NULL
) WITHOUT ROWID;

-- Digest failure listings look up failed rows by state.
CREATE INDEX outbox_state ON outbox(state, delivery_status);
