-- 0004: the on-call chain. An alert keeps the chain it was raised with, so
-- a restart or a rotation change in the middle continues it exactly; every
-- page, acknowledgement link, staff text and once-only notice is recorded.

-- chain: JSON array of indexes into the configured on-call list, in paging
-- order, fixed when the alert is raised (NULL for alerts raised before 0004:
-- the configured order). reach: how the client can be reached.
ALTER TABLE alerts ADD COLUMN chain TEXT;
ALTER TABLE alerts ADD COLUMN reach TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN acked_via TEXT NOT NULL DEFAULT ''; -- sms or link
ALTER TABLE alerts ADD COLUMN exhausted_at TEXT; -- when everyone was paged
CREATE INDEX alerts_due ON alerts(next_escalation_at) WHERE acked_at IS NULL;
CREATE INDEX alerts_message ON alerts(message_id);

-- One row per page sent for an alert (per person and channel).
CREATE TABLE alert_pages (
	id        INTEGER PRIMARY KEY,
	alert_id  INTEGER NOT NULL REFERENCES alerts(id),
	step      INTEGER NOT NULL,
	person    TEXT NOT NULL, -- name as configured when paged
	channel   TEXT NOT NULL,
	outbox_id INTEGER NOT NULL REFERENCES outbox(id),
	paged_at  TEXT NOT NULL
);
CREATE INDEX alert_pages_alert ON alert_pages(alert_id, step);
CREATE INDEX alert_pages_outbox ON alert_pages(outbox_id);

-- One-time acknowledgement links sent in page emails.
CREATE TABLE ack_tokens (
	nonce      TEXT PRIMARY KEY,
	alert_id   INTEGER NOT NULL REFERENCES alerts(id),
	person     TEXT NOT NULL,
	expires_at TEXT NOT NULL,
	used_at    TEXT
) WITHOUT ROWID;
CREATE INDEX ack_tokens_alert ON ack_tokens(alert_id);

-- Notices sent once only (the dead-man's switch), by key.
CREATE TABLE notices (
	key     TEXT PRIMARY KEY,
	sent_at TEXT NOT NULL
) WITHOUT ROWID;

-- Texts from staff phones handled as acknowledgements (never client
-- messages), so a provider's retry is answered once.
CREATE TABLE staff_messages (
	channel     TEXT NOT NULL,
	provider_id TEXT NOT NULL,
	received_at TEXT NOT NULL,
	person      TEXT NOT NULL,
	action      TEXT NOT NULL,
	alert_id    INTEGER,
	PRIMARY KEY (channel, provider_id)
) WITHOUT ROWID;
