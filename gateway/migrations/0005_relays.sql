-- 0005: therapist replies relayed to clients. A relay is the therapist (or
-- the on-call person) answering a client from the digest's per-client reply
-- address, or by texting back to an alert; each one is recorded, refused or
-- not, with who asked, where it went and how it ended.
CREATE TABLE relays (
	id             INTEGER PRIMARY KEY,
	via            TEXT NOT NULL,            -- how the request came: email or sms
	provider_id    TEXT NOT NULL,            -- its Message-ID or SID: a replay is sent once
	received_at    TEXT NOT NULL,
	client_id      INTEGER,                  -- NULL when the request named nobody valid
	digest_id      INTEGER,                  -- the digest whose reply address was used
	alert_id       INTEGER,                  -- the alert texted back to
	by_name        TEXT NOT NULL DEFAULT '', -- staff name; '' when the sender is not staff
	sender         TEXT NOT NULL DEFAULT '', -- the requesting address or phone, as received
	trusted        INTEGER NOT NULL DEFAULT 0, -- staff, with no failed sender check
	notify_channel TEXT NOT NULL DEFAULT '', -- where the confirmation goes
	notify_to      TEXT NOT NULL DEFAULT '',
	request_id     TEXT NOT NULL DEFAULT '', -- the request's Message-ID, to thread the confirmation
	channel        TEXT NOT NULL DEFAULT '', -- to the client
	recipient      TEXT NOT NULL DEFAULT '',
	state          TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed', 'refused')),
	reason         TEXT NOT NULL DEFAULT '', -- a code such as unknown-sender or opted-out; never content
	text           TEXT NOT NULL DEFAULT '', -- what was relayed ('' when refused)
	parts          TEXT NOT NULL DEFAULT '[]', -- JSON: the texts of an SMS relay, sent one after another
	tz             TEXT NOT NULL DEFAULT '', -- the practice's time zone, for the confirmation
	created_at     TEXT NOT NULL,
	done_at        TEXT,
	reported_in    INTEGER REFERENCES digests(id), -- listed in this digest
	UNIQUE (via, provider_id)
);
CREATE INDEX relays_client ON relays(client_id, created_at);
CREATE INDEX relays_unreported ON relays(client_id) WHERE reported_in IS NULL;

ALTER TABLE outbox ADD COLUMN relay_id INTEGER REFERENCES relays(id);
CREATE INDEX outbox_relay ON outbox(relay_id) WHERE relay_id IS NOT NULL;
CREATE INDEX outbox_client ON outbox(client_id) WHERE client_id IS NOT NULL;

ALTER TABLE audit ADD COLUMN relay_id INTEGER;

-- The address a client last wrote from on their last channel: a relay goes
-- back to it.
ALTER TABLE clients ADD COLUMN last_address TEXT NOT NULL DEFAULT '';
