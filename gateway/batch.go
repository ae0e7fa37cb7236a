package gateway

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// maxBatch bounds how many callers share one commit, so a burst cannot
// hold the write lock for long.
const maxBatch = 128

// batcher groups concurrent write transactions into one SQLite commit: one
// fsync serves them all. Each caller's work runs in its own savepoint, so a
// failing caller rolls back alone, and every caller returns only once the
// shared commit is durable.
type batcher struct {
	mu      sync.Mutex
	queue   []*batchItem
	running bool
}

type batchItem struct {
	ctx  context.Context
	fn   func(tx *sql.Tx, now time.Time) error
	err  error
	done chan struct{}
}

// batchTx is tx for hot paths with many concurrent callers (inbound
// messages, outbox outcomes).
func (s *Store) batchTx(ctx context.Context, fn func(tx *sql.Tx, now time.Time) error) error {
	it := &batchItem{ctx: ctx, fn: fn, done: make(chan struct{})}
	b := &s.batch
	b.mu.Lock()
	b.queue = append(b.queue, it)
	if !b.running {
		b.running = true
		go s.runBatches()
	}
	b.mu.Unlock()
	<-it.done // even when ctx ends: fn may be running and its outcome must be known
	return it.err
}

// runBatches commits queued work until the queue is empty.
func (s *Store) runBatches() {
	b := &s.batch
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatch)
		items := b.queue[:n:n]
		b.queue = b.queue[n:]
		if n == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		s.commitBatch(items)
		for _, it := range items {
			close(it.done)
		}
	}
}

func (s *Store) commitBatch(items []*batchItem) {
	fail := func(err error) {
		for _, it := range items {
			if it.err == nil {
				it.err = err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("store: begin: %w", err))
		return
	}
	defer tx.Rollback()
	now := s.Now().UTC()
	for _, it := range items {
		if err := it.ctx.Err(); err != nil {
			it.err = err
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT item`); err != nil {
			fail(fmt.Errorf("store: savepoint: %w", err))
			return
		}
		if it.err = it.fn(tx, now); it.err != nil {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO item`); err != nil {
				fail(fmt.Errorf("store: rollback to savepoint: %w", err))
				return
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE item`); err != nil {
			fail(fmt.Errorf("store: release savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("store: commit: %w", err))
	}
}
