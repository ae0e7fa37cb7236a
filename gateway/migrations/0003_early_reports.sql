-- 0003: delivery reports that arrive before the outbox has recorded the
-- provider id they name (a fast failure can beat our own commit). They are
-- applied when the id is recorded.
CREATE TABLE early_reports (
	channel     TEXT NOT NULL,
	provider_id TEXT NOT NULL,
	state       TEXT NOT NULL,
	error_code  TEXT NOT NULL DEFAULT '',
	received_at TEXT NOT NULL,
	PRIMARY KEY (channel, provider_id, state)
) WITHOUT ROWID;
