// Package gateway is the heart of the therapist inbox gateway: the SQLite
// store, the dispatcher that decides what happens to each inbound message,
// the outbox worker that delivers what it decided, and the check-in digests.
// It never imports the channel adapters; they meet through the interfaces in
// gateway/envelope.
package gateway

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// queryTimeout bounds every store transaction (soju's sqliteQueryTimeout).
const queryTimeout = 15 * time.Second

// timeLayout is the one format times are stored in: UTC, fixed width, so
// text order is time order.
const timeLayout = "2006-01-02 15:04:05.000000"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is the gateway's SQLite database. It has one connection, so there is
// one writer at a time.
type Store struct {
	db *sql.DB
	// Now returns the current time; tests pin it. It is read once per
	// transaction.
	Now func() time.Time

	batch batcher
}

// Open opens (creating it 0600 if needed) the database at path and applies
// any pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// Create the file ourselves so it is 0600 whatever the umask; SQLite gives
	// its -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	s := &Store{db: db, Now: time.Now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var one int
	return s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	ents, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("store: migration %q has no number", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migration %s out of sequence", m.name)
		}
	}
	return ms, nil
}

// migrate applies, in order and each in its own transaction, the migrations
// newer than PRAGMA user_version.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	var current int
	if err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&current); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if current > len(ms) {
		return fmt.Errorf("store: database schema version %d is newer than this binary knows (%d); run a newer gateway", current, len(ms))
	}
	for _, m := range ms[current:] {
		err := s.tx(ctx, func(tx *sql.Tx, _ time.Time) error {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("store: migration %s: %w", m.name, err)
			}
			_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, m.version))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion returns the applied migration number.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v)
	return v, err
}

// tx runs fn in one write transaction with a deadline, passing the time
// fixed for the whole transaction.
func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx, now time.Time) error) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx, s.Now().UTC()); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// fmtTime formats t for storage; the zero time is stored as NULL.
func fmtTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeLayout)
}

// parseTime reads a stored time; NULL gives the zero time.
func parseTime(s sql.NullString) time.Time {
	if !s.Valid || s.String == "" {
		return time.Time{}
	}
	t, err := time.ParseInLocation(timeLayout, s.String, time.UTC)
	if err != nil {
		return time.Time{}
	}
	return t
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "null"
	}
	return string(b)
}

// audit records one decision, with ids only.
func audit(ctx context.Context, tx *sql.Tx, now time.Time, event string, ids auditIDs) error {
	_, err := tx.ExecContext(ctx, `
		INSERT INTO audit (at, event, client_id, message_id, outbox_id, alert_id, digest_id, relay_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		fmtTime(now), event, nullID(ids.client), nullID(ids.message), nullID(ids.outbox), nullID(ids.alert), nullID(ids.digest),
		nullID(ids.relay))
	if err != nil {
		return fmt.Errorf("store: audit: %w", err)
	}
	return nil
}

type auditIDs struct{ client, message, outbox, alert, digest, relay int64 }

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// Checkpoint returns the value stored under name, or "" when there is none.
func (s *Store) Checkpoint(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM checkpoints WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: checkpoint: %w", err)
	}
	return v, nil
}

// SetCheckpoint stores value under name.
func (s *Store) SetCheckpoint(ctx context.Context, name, value string) error {
	return s.tx(ctx, func(tx *sql.Tx, now time.Time) error {
		return setCheckpoint(ctx, tx, now, name, value)
	})
}

// checkpoint is Checkpoint inside tx.
func checkpoint(ctx context.Context, tx *sql.Tx, name string) (string, error) {
	var v string
	err := tx.QueryRowContext(ctx, `SELECT value FROM checkpoints WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: checkpoint: %w", err)
	}
	return v, nil
}

// setCheckpoint is SetCheckpoint inside tx.
func setCheckpoint(ctx context.Context, tx *sql.Tx, now time.Time, name, value string) error {
	_, err := tx.ExecContext(ctx, `
		INSERT INTO checkpoints (name, value, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
		name, value, fmtTime(now))
	if err != nil {
		return fmt.Errorf("store: set checkpoint: %w", err)
	}
	return nil
}
