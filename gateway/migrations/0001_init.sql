-- 0001: the first schema. Never edit a shipped migration; add a new file.
-- Times are UTC text in one fixed-width format (see timeLayout), so they sort.

CREATE TABLE clients (
	id               INTEGER PRIMARY KEY,
	first_name       TEXT NOT NULL DEFAULT '',
	known            INTEGER NOT NULL DEFAULT 0, -- on the practice's client list
	created_at       TEXT NOT NULL,
	last_full_ack_at TEXT,                       -- quiet period, shared across channels
	last_ack_at      TEXT,
	last_channel     TEXT NOT NULL DEFAULT ''
);

-- One client may have a phone number and an email address.
CREATE TABLE client_addresses (
	channel   TEXT NOT NULL,
	address   TEXT NOT NULL, -- E.164 or lower-cased email
	client_id INTEGER NOT NULL REFERENCES clients(id),
	PRIMARY KEY (channel, address)
) WITHOUT ROWID;
CREATE INDEX client_addresses_client ON client_addresses(client_id);

CREATE TABLE digests (
	id            INTEGER PRIMARY KEY,
	checkin_id    INTEGER REFERENCES checkins(id),
	created_at    TEXT NOT NULL,
	message_count INTEGER NOT NULL,
	urgent_count  INTEGER NOT NULL,
	failure_count INTEGER NOT NULL,
	state         TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
	sent_at       TEXT
);

CREATE TABLE messages (
	id          INTEGER PRIMARY KEY,
	client_id   INTEGER NOT NULL REFERENCES clients(id),
	channel     TEXT NOT NULL,
	provider_id TEXT NOT NULL,
	received_at TEXT NOT NULL,
	stored_at   TEXT NOT NULL,
	subject     TEXT NOT NULL DEFAULT '',
	body        TEXT NOT NULL DEFAULT '',
	original    TEXT NOT NULL DEFAULT '',
	attachments TEXT NOT NULL DEFAULT '[]', -- JSON
	notes       TEXT NOT NULL DEFAULT '[]', -- JSON
	email_id    TEXT NOT NULL DEFAULT '',   -- Message-ID, for threading replies
	refs        TEXT NOT NULL DEFAULT '[]', -- JSON References
	automated   INTEGER NOT NULL DEFAULT 0,
	state       TEXT NOT NULL CHECK (state IN ('held', 'urgent', 'delivered')),
	urgent      INTEGER NOT NULL DEFAULT 0,
	category    TEXT NOT NULL DEFAULT '',
	evidence    TEXT NOT NULL DEFAULT '[]', -- JSON
	confidence  REAL NOT NULL DEFAULT 0,
	action      TEXT NOT NULL,              -- what the dispatcher decided
	digest_id   INTEGER REFERENCES digests(id),
	UNIQUE (channel, provider_id)
);
CREATE INDEX messages_undelivered ON messages(state, digest_id) WHERE state <> 'delivered';
CREATE INDEX messages_client ON messages(client_id, received_at);

CREATE TABLE alerts (
	id                 INTEGER PRIMARY KEY,
	message_id         INTEGER NOT NULL REFERENCES messages(id),
	client_id          INTEGER NOT NULL REFERENCES clients(id),
	created_at         TEXT NOT NULL,
	step               INTEGER NOT NULL DEFAULT 0,
	next_escalation_at TEXT,
	acked_at           TEXT,
	acked_by           TEXT NOT NULL DEFAULT ''
);

CREATE TABLE outbox (
	id              INTEGER PRIMARY KEY,
	kind            TEXT NOT NULL,
	channel         TEXT NOT NULL,
	recipient       TEXT NOT NULL,
	recipient_name  TEXT NOT NULL DEFAULT '',
	subject         TEXT NOT NULL DEFAULT '',
	body            TEXT NOT NULL,
	html            TEXT NOT NULL DEFAULT '',
	in_reply_to     TEXT NOT NULL DEFAULT '',
	refs            TEXT NOT NULL DEFAULT '[]',
	client_id       INTEGER REFERENCES clients(id),
	message_id      INTEGER REFERENCES messages(id),
	alert_id        INTEGER REFERENCES alerts(id),
	digest_id       INTEGER REFERENCES digests(id),
	state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at TEXT NOT NULL,
	created_at      TEXT NOT NULL,
	sent_at         TEXT,
	provider_id     TEXT NOT NULL DEFAULT '',
	error_code      TEXT NOT NULL DEFAULT '',
	error           TEXT NOT NULL DEFAULT '', -- short reason, never client content
	delivery_status TEXT NOT NULL DEFAULT '', -- from provider callbacks
	reported_in     INTEGER REFERENCES digests(id) -- failure listed in this digest
);
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_failed ON outbox(state) WHERE reported_in IS NULL;
CREATE INDEX outbox_provider ON outbox(provider_id) WHERE provider_id <> '';

CREATE TABLE checkins (
	id            INTEGER PRIMARY KEY,
	scheduled_for TEXT NOT NULL UNIQUE, -- one run per scheduled moment
	fired_at      TEXT NOT NULL,
	manual        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE opt_outs (
	channel    TEXT NOT NULL,
	address    TEXT NOT NULL,
	created_at TEXT NOT NULL,
	PRIMARY KEY (channel, address)
) WITHOUT ROWID;

-- Every decision, with ids and times only.
CREATE TABLE audit (
	id         INTEGER PRIMARY KEY,
	at         TEXT NOT NULL,
	event      TEXT NOT NULL,
	client_id  INTEGER,
	message_id INTEGER,
	outbox_id  INTEGER,
	alert_id   INTEGER,
	digest_id  INTEGER
);
CREATE INDEX audit_client ON audit(client_id, at);
