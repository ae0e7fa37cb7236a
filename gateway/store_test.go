package gateway

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenCreatesPrivateFileAndMigrates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "gateway.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.SchemaVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != len(ms) {
		t.Fatalf("schema version %d, want %d", v, len(ms))
	}
	if err := s.SetCheckpoint(context.Background(), "x", "1"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(f), got)
		}
	}
	var mode, sync string
	s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	if mode != "wal" || sync != "2" {
		t.Fatalf("journal_mode %q synchronous %q, want wal and 2 (FULL)", mode, sync)
	}
}

func TestOpenTightensExistingFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCheckpoint(ctx, "imap:INBOX", "7:42"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Checkpoint(ctx, "imap:INBOX")
	if err != nil || v != "7:42" {
		t.Fatalf("checkpoint = %q, %v; want 7:42", v, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`PRAGMA user_version = 999`)
	db.Close()
	if _, err := Open(context.Background(), path); err == nil {
		t.Fatal("opened a database from a newer binary")
	}
}

// schemaV1 is the schema as shipped in migration 0001, with a row in each
// table that matters. DO NOT EDIT: it is what old databases hold.
const schemaV1 = `
CREATE TABLE clients (id INTEGER PRIMARY KEY, first_name TEXT NOT NULL DEFAULT '', known INTEGER NOT NULL DEFAULT 0,
	created_at TEXT NOT NULL, last_full_ack_at TEXT, last_ack_at TEXT, last_channel TEXT NOT NULL DEFAULT '');
CREATE TABLE client_addresses (channel TEXT NOT NULL, address TEXT NOT NULL, client_id INTEGER NOT NULL REFERENCES clients(id),
	PRIMARY KEY (channel, address)) WITHOUT ROWID;
CREATE INDEX client_addresses_client ON client_addresses(client_id);
CREATE TABLE digests (id INTEGER PRIMARY KEY, checkin_id INTEGER REFERENCES checkins(id), created_at TEXT NOT NULL,
	message_count INTEGER NOT NULL, urgent_count INTEGER NOT NULL, failure_count INTEGER NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')), sent_at TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), channel TEXT NOT NULL,
	provider_id TEXT NOT NULL, received_at TEXT NOT NULL, stored_at TEXT NOT NULL, subject TEXT NOT NULL DEFAULT '',
	body TEXT NOT NULL DEFAULT '', original TEXT NOT NULL DEFAULT '', attachments TEXT NOT NULL DEFAULT '[]',
	notes TEXT NOT NULL DEFAULT '[]', email_id TEXT NOT NULL DEFAULT '', refs TEXT NOT NULL DEFAULT '[]',
	automated INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL CHECK (state IN ('held', 'urgent', 'delivered')),
	urgent INTEGER NOT NULL DEFAULT 0, category TEXT NOT NULL DEFAULT '', evidence TEXT NOT NULL DEFAULT '[]',
	confidence REAL NOT NULL DEFAULT 0, action TEXT NOT NULL, digest_id INTEGER REFERENCES digests(id),
	UNIQUE (channel, provider_id));
CREATE INDEX messages_undelivered ON messages(state, digest_id) WHERE state <> 'delivered';
CREATE INDEX messages_client ON messages(client_id, received_at);
CREATE TABLE alerts (id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL REFERENCES messages(id),
	client_id INTEGER NOT NULL REFERENCES clients(id), created_at TEXT NOT NULL, step INTEGER NOT NULL DEFAULT 0,
	next_escalation_at TEXT, acked_at TEXT, acked_by TEXT NOT NULL DEFAULT '');
CREATE TABLE outbox (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL,
	recipient_name TEXT NOT NULL DEFAULT '', subject TEXT NOT NULL DEFAULT '', body TEXT NOT NULL,
	html TEXT NOT NULL DEFAULT '', in_reply_to TEXT NOT NULL DEFAULT '', refs TEXT NOT NULL DEFAULT '[]',
	client_id INTEGER REFERENCES clients(id), message_id INTEGER REFERENCES messages(id),
	alert_id INTEGER REFERENCES alerts(id), digest_id INTEGER REFERENCES digests(id),
	state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
	attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL, created_at TEXT NOT NULL, sent_at TEXT,
	provider_id TEXT NOT NULL DEFAULT '', error_code TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
	delivery_status TEXT NOT NULL DEFAULT '', reported_in INTEGER REFERENCES digests(id));
CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_failed ON outbox(state) WHERE reported_in IS NULL;
CREATE INDEX outbox_provider ON outbox(provider_id) WHERE provider_id <> '';
CREATE TABLE checkins (id INTEGER PRIMARY KEY, scheduled_for TEXT NOT NULL UNIQUE, fired_at TEXT NOT NULL,
	manual INTEGER NOT NULL DEFAULT 0);
CREATE TABLE opt_outs (channel TEXT NOT NULL, address TEXT NOT NULL, created_at TEXT NOT NULL,
	PRIMARY KEY (channel, address)) WITHOUT ROWID;
CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL, client_id INTEGER,
	message_id INTEGER, outbox_id INTEGER, alert_id INTEGER, digest_id INTEGER);
CREATE INDEX audit_client ON audit(client_id, at);

INSERT INTO clients (id, first_name, known, created_at) VALUES (1, 'Alex', 1, '2026-01-01 00:00:00.000000');
INSERT INTO client_addresses VALUES ('sms', '+15550100001', 1);
INSERT INTO messages (id, client_id, channel, provider_id, received_at, stored_at, body, state, action)
	VALUES (1, 1, 'sms', 'SM1', '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', 'hello', 'held', 'ack');
INSERT INTO outbox (id, kind, channel, recipient, body, next_attempt_at, created_at, client_id, message_id)
	VALUES (1, 'ack', 'sms', '+15550100001', 'thanks', '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', 1, 1);
INSERT INTO opt_outs VALUES ('sms', '+15550100002', '2026-01-01 00:00:00.000000');
PRAGMA user_version = 1;
`

func TestMigrateFromFrozenV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaV1); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, _ := s.SchemaVersion(context.Background())
	if ms, _ := migrations(); v != len(ms) {
		t.Fatalf("schema version %d, want %d", v, len(ms))
	}
	if n := count(t, s, `SELECT count(*) FROM messages WHERE body = 'hello' AND state = 'held'`); n != 1 {
		t.Fatalf("held message lost in migration")
	}
	if n := count(t, s, `SELECT count(*) FROM outbox WHERE state = 'pending'`); n != 1 {
		t.Fatalf("pending outbox row lost in migration")
	}
	out, err := s.OptedOut(context.Background(), "sms", "+15550100002")
	if err != nil || !out {
		t.Fatalf("opt-out lost in migration: %v %v", out, err)
	}
	if err := s.SetCheckpoint(context.Background(), "twilio:last", "SM1"); err != nil {
		t.Fatalf("0002 table missing: %v", err)
	}
	// The migrated store works: a client from v1 is recognised.
	tg := newTestGateway(t, "none")
	tg.d.Store = s
	tg.store = s
	s.Now = tg.clock.Now
	r := tg.receive(t, sms("+15550100001", "back again"))
	if r.ClientID != 1 {
		t.Fatalf("client id %d, want the v1 client 1", r.ClientID)
	}
}

// TestMigrateV3WithOpenAlert migrates a version-3 database holding an
// alert raised before 0004 (no stored chain or reach) and escalates it.
func TestMigrateV3WithOpenAlert(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	// v1 by hand, then the shipped 0002 and 0003 (never edited).
	for _, q := range []string{schemaV1, ms[1].sql, ms[2].sql, `
		INSERT INTO messages (id, client_id, channel, provider_id, received_at, stored_at, body, state, urgent, action)
			VALUES (2, 1, 'sms', 'SM2', '2026-11-16 19:00:00.000000', '2026-11-16 19:00:00.000000', 'i want to end it', 'urgent', 1, 'urgent');
		INSERT INTO alerts (id, message_id, client_id, created_at, step, next_escalation_at)
			VALUES (1, 2, 1, '2026-11-16 19:00:00.000000', 0, '2026-11-16 19:10:00.000000');
		INSERT INTO checkpoints (name, value, updated_at) VALUES ('imap:INBOX', '7:42', '2026-11-16 19:00:00.000000');
		PRAGMA user_version = 3;`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.SchemaVersion(context.Background()); v != len(ms) {
		t.Fatalf("schema version %d, want %d", v, len(ms))
	}
	if v, _ := s.Checkpoint(context.Background(), "imap:INBOX"); v != "7:42" {
		t.Fatalf("checkpoint lost: %q", v)
	}
	if n := count(t, s, `SELECT count(*) FROM outbox WHERE state = 'pending'`); n != 1 {
		t.Fatal("pending outbox row lost")
	}
	tg := newOnCallGateway(t)
	tg.e.Store = s
	s.Now = tg.clock.Now
	tg.clock.Set(time.Date(2026, 11, 16, 14, 10, 0, 0, newYork))
	if n := tg.step(t); n != 1 {
		t.Fatalf("old alert not escalated (%d)", n)
	}
	got := pages(t, s, 1)
	if !sameStrings(got, []string{"sms:" + samPhone, "email:sam@example.org"}) {
		t.Fatalf("old alert paged %v, want Sam, second in the configured order", got)
	}
	if q := outbox(t, s)[1]; !strings.Contains(q.Body, "URGENT #1 (escalated): Alex by text") || !strings.Contains(q.Body, "+15550100001") {
		t.Fatalf("old alert's page %q", q.Body)
	}
}
