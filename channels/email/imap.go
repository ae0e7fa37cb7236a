package email

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// IMAP defaults and limits.
const (
	DefaultMailbox     = "INBOX"
	DefaultPoll        = time.Minute      // poll interval without IDLE
	DefaultIdleRefresh = 25 * time.Minute // re-issue IDLE after this
	// maxIdleRefresh: RFC 2177 §3 lets servers log out a client idle for
	// 30 minutes, so IDLE must be re-issued before that.
	maxIdleRefresh = 29 * time.Minute

	// Messages over ParseOptions.MaxSize (DefaultMaxSize when zero) are
	// fetched header only.
	fetchBatch      = 100      // messages per UID FETCH of bodies
	fetchBatchBytes = 16 << 20 // and at most this many bytes (one big message may exceed it)
	// minRate is the slowest transfer tolerated for message bodies, in
	// bytes per second, on top of the per-command timeout.
	minRate = 64 << 10

	backoffMin = time.Second
	backoffMax = 5 * time.Minute
)

// Checkpoints is where the watcher keeps UIDVALIDITY and the last UID (the
// gateway's store implements it).
type Checkpoints interface {
	Checkpoint(ctx context.Context, name string) (string, error)
	SetCheckpoint(ctx context.Context, name, value string) error
}

// IMAPConfig says which mailbox to watch and how to reach it.
type IMAPConfig struct {
	Addr string // host:port
	// Security is "tls" (implicit, 993), "starttls" (143) or "none" (plain;
	// only allowed when Addr is loopback unless AllowPlain).
	Security           string
	AllowPlain         bool
	Username, Password string
	Mailbox            string // default "INBOX"
	// MoveTo, when set, is where processed mail is moved (created if
	// missing); otherwise processed mail is flagged \Seen.
	MoveTo      string
	Poll        time.Duration // poll interval when the server has no IDLE; default DefaultPoll
	IdleRefresh time.Duration // re-issue IDLE after this; default DefaultIdleRefresh, must be < 29 min
	Timeout     time.Duration // per command; default DefaultTimeout
	TLSConfig   *tls.Config   // RootCAs etc.; ServerName from Addr when empty
	Parse       ParseOptions
	Logger      *slog.Logger
}

// Watcher reads new mail from one IMAP mailbox and hands each message to
// the handler, in UID order. A message is flagged \Seen (or moved) and
// checkpointed only after the handler has returned, so a crash re-delivers
// it and the handler's dedupe on ProviderID drops the repeat. Run and Once
// must not overlap (they refuse to).
type Watcher struct {
	cfg      IMAPConfig
	h        envelope.Handler
	cp       Checkpoints
	log      *slog.Logger
	key      string // checkpoint name
	host     string // for TLS ServerName
	maxSize  int64
	running  sync.Mutex
	healthy  atomic.Bool
	lastSync atomic.Int64 // unix nanoseconds; 0 = never

	// Seams for tests.
	parse      func(raw []byte, size int64, opts ParseOptions) envelope.Inbound
	backoffMin time.Duration
}

// NewWatcher checks cfg and returns a Watcher. It reports every problem at
// once.
func NewWatcher(cfg IMAPConfig, h envelope.Handler, cp Checkpoints) (*Watcher, error) {
	var errs []error
	addf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" || port == "" {
		addf("imap addr: %q is not host:port; write e.g. \"imap.example.org:993\"", cfg.Addr)
	}
	switch cfg.Security {
	case SecurityTLS, SecurityStartTLS:
	case SecurityNone:
		if host != "" && !isLoopback(host) && !cfg.AllowPlain {
			addf("imap security: \"none\" sends the password in clear text to a non-loopback host; use \"tls\" or \"starttls\" (or set allow_plain)")
		}
	default:
		addf("imap security: %q is not one of \"tls\", \"starttls\", \"none\"", cfg.Security)
	}
	if cfg.Username == "" || cfg.Password == "" {
		addf("imap username and password: both are required")
	}
	if cfg.Mailbox == "" {
		cfg.Mailbox = DefaultMailbox
	}
	if cfg.MoveTo != "" && strings.EqualFold(cfg.MoveTo, cfg.Mailbox) {
		addf("imap move_to: %q is the watched mailbox itself; name another folder or leave it empty", cfg.MoveTo)
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Poll < 0 {
		addf("imap poll: %v is negative", cfg.Poll)
	}
	if cfg.IdleRefresh == 0 {
		cfg.IdleRefresh = DefaultIdleRefresh
	}
	if cfg.IdleRefresh < 0 || cfg.IdleRefresh >= maxIdleRefresh {
		addf("imap idle_refresh: %v must be positive and under 29 minutes (servers drop clients idle for 30)", cfg.IdleRefresh)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		addf("imap timeout: %v is negative", cfg.Timeout)
	}
	if cfg.Parse.MaxSize < 0 {
		addf("imap max size: %d is negative", cfg.Parse.MaxSize)
	}
	if h == nil {
		addf("imap: a handler is required")
	}
	if cp == nil {
		addf("imap: a checkpoint store is required")
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		cfg:        cfg,
		h:          h,
		cp:         cp,
		log:        cfg.Logger,
		key:        "imap:" + cfg.Mailbox,
		host:       host,
		maxSize:    cfg.Parse.MaxSize,
		parse:      Parse,
		backoffMin: backoffMin,
	}
	if w.maxSize == 0 {
		w.maxSize = DefaultMaxSize
	}
	return w, nil
}

// Healthy reports whether the watcher is connected and its last catch-up
// succeeded.
func (w *Watcher) Healthy() bool { return w.healthy.Load() }

// LastSync returns when the last catch-up finished without error (zero if
// none has). While connected this happens on every new-mail wake-up and at
// least every IdleRefresh (or Poll without IDLE).
func (w *Watcher) LastSync() time.Time {
	if ns := w.lastSync.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Run watches the mailbox until ctx is done: connect, catch up with
// everything above the checkpoint, then wait for new mail with IDLE (or
// poll) and catch up again. After any error it reconnects with exponential
// backoff and full jitter (1 s up to 5 min), reset once a catch-up
// succeeds. It returns nil when ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.TryLock() {
		return errors.New("imap: watcher already running")
	}
	defer w.running.Unlock()
	for attempt := 0; ; attempt++ {
		_, synced, err := w.session(ctx, true)
		w.healthy.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			attempt = 0
		}
		delay := w.backoff(attempt)
		level := slog.LevelWarn
		if attempt >= 5 { // failing again and again: someone should look
			level = slog.LevelError
		}
		w.log.Log(ctx, level, "imap disconnected", "err", err, "attempt", attempt+1, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Once connects, processes everything above the checkpoint, logs out and
// returns how many messages the handler accepted.
func (w *Watcher) Once(ctx context.Context) (int, error) {
	if !w.running.TryLock() {
		return 0, errors.New("imap: watcher already running")
	}
	defer w.running.Unlock()
	n, _, err := w.session(ctx, false)
	w.healthy.Store(false)
	return n, err
}

// backoff returns a random delay in [0, min(max, base·2^attempt)) (full
// jitter), so many gateways don't reconnect in step.
func (w *Watcher) backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 20 {
		d = min(backoffMax, w.backoffMin<<attempt)
	}
	return rand.N(d) + 1
}

// session is one connection: login, select, catch up and, when watch is
// set, wait for new mail until something fails. synced says a catch-up
// completed, which resets the reconnect backoff.
func (w *Watcher) session(ctx context.Context, watch bool) (n int, synced bool, err error) {
	defer func() {
		if r := recover(); r != nil { // the payload may hold message content
			err = fmt.Errorf("imap: panic (%T) while processing mail", r)
		}
	}()
	start := time.Now()
	s, err := w.connect(ctx)
	if err != nil {
		return 0, false, err
	}
	defer s.close(!watch)
	if err := s.login(); err != nil {
		return 0, false, err
	}
	if err := s.open(ctx); err != nil {
		return 0, false, err
	}
	idle := s.c.Caps().Has(imap.CapIdle)
	w.log.Info("imap connected", "uidvalidity", s.uidValidity, "last_uid", s.last, "idle", idle,
		"took", time.Since(start).Round(time.Millisecond))
	for {
		k, err := s.catchUp(ctx)
		n += k
		if err != nil {
			return n, synced, err
		}
		synced = true
		w.lastSync.Store(time.Now().UnixNano())
		w.healthy.Store(true)
		if !watch {
			return n, synced, nil
		}
		if idle {
			err = s.idle(ctx)
		} else {
			err = s.poll(ctx)
		}
		if err != nil {
			return n, synced, err
		}
	}
}

// conn is one IMAP connection and what the watcher knows about its
// selected mailbox.
type conn struct {
	w        *Watcher
	ctx      context.Context
	raw      net.Conn
	c        *imapclient.Client
	wake     chan struct{} // new mail announced (EXISTS); buffered, never blocks
	stop     func() bool   // undoes the close-on-cancel hook
	timedOut atomic.Bool

	// A message the handler accepted is marked and checkpointed even when
	// ctx ends meanwhile: cancelling then closes the connection after it.
	mu        sync.Mutex
	busy      bool
	cancelled bool

	uidValidity uint32
	last        imap.UID // highest UID processed in this UIDVALIDITY
}

// connect dials and reads the greeting (after TLS or STARTTLS). Cancelling
// ctx closes the connection, which unblocks any command in flight.
func (w *Watcher) connect(ctx context.Context) (*conn, error) {
	s := &conn{w: w, ctx: ctx, wake: make(chan struct{}, 1)}
	opts := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			// Runs on the client's reader goroutine: hand off, never block.
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					select {
					case s.wake <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	d := net.Dialer{Timeout: w.cfg.Timeout, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", w.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("imap: connect: %w", err)
	}
	s.raw = raw
	s.stop = context.AfterFunc(ctx, s.cancel)
	err = s.wait("connect", w.cfg.Timeout, func() error {
		switch w.cfg.Security {
		case SecurityTLS:
			tc := tls.Client(raw, w.tlsConfig([]string{"imap"}))
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("tls: %w", err)
			}
			s.c = imapclient.New(tc, opts)
		case SecurityStartTLS:
			opts.TLSConfig = w.tlsConfig(nil)
			c, err := imapclient.NewStartTLS(raw, opts)
			if err != nil {
				return fmt.Errorf("starttls: %w", err)
			}
			s.c = c
		default:
			s.c = imapclient.New(raw, opts)
		}
		return s.c.WaitGreeting()
	})
	if err != nil {
		s.stop()
		raw.Close()
		if s.c != nil {
			s.c.Close()
		}
		return nil, err
	}
	return s, nil
}

// cancel closes the connection, which unblocks any command in flight,
// unless a message is being confirmed; end closes it then.
func (s *conn) cancel() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelled = true
	if !s.busy {
		s.raw.Close()
	}
}

// begin marks a message in progress; false once ctx is done.
func (s *conn) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = !s.cancelled
	return s.busy
}

func (s *conn) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = false
	if s.cancelled {
		s.raw.Close()
	}
}

func (w *Watcher) tlsConfig(protos []string) *tls.Config {
	cfg := &tls.Config{}
	if w.cfg.TLSConfig != nil {
		cfg = w.cfg.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = w.host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.NextProtos == nil {
		cfg.NextProtos = protos
	}
	return cfg
}

// wait runs f and closes the connection if it takes longer than d:
// go-imap's Wait takes no context and sets no deadline while it waits for
// a reply.
func (s *conn) wait(what string, d time.Duration, f func() error) error {
	t := time.AfterFunc(d, func() {
		s.timedOut.Store(true)
		s.raw.Close()
	})
	err := f()
	t.Stop()
	switch {
	case err == nil:
		return nil
	case s.ctx.Err() != nil:
		return fmt.Errorf("imap: %s: %w", what, s.ctx.Err())
	case s.timedOut.Load():
		return fmt.Errorf("imap: %s: no answer within %v", what, d)
	default:
		return fmt.Errorf("imap: %s: %w", what, err)
	}
}

// cmd is wait with the per-command timeout.
func (s *conn) cmd(what string, f func() error) error { return s.wait(what, s.w.cfg.Timeout, f) }

// close logs out politely when asked (Once), then drops the connection.
func (s *conn) close(logout bool) {
	if logout && !s.timedOut.Load() {
		s.wait("logout", min(s.w.cfg.Timeout, 5*time.Second), s.c.Logout().Wait)
	}
	s.stop()
	s.c.Close()
}

func (s *conn) login() error {
	err := s.cmd("login", s.c.Login(s.w.cfg.Username, s.w.cfg.Password).Wait)
	var ie *imap.Error
	if errors.As(err, &ie) {
		// Neither the server's text nor ours names the user (it may be an
		// address).
		return fmt.Errorf("imap: login refused; check the username and password: %w", ie)
	}
	return err
}

// open creates MoveTo if needed, selects the mailbox and loads the
// checkpoint. A UIDVALIDITY other than the checkpoint's means the old UIDs
// are meaningless: start again from UID 0 and rely on the handler's dedupe.
func (s *conn) open(ctx context.Context) error {
	w := s.w
	if w.cfg.MoveTo != "" {
		err := s.cmd("create move_to folder", s.c.Create(w.cfg.MoveTo, nil).Wait)
		var ie *imap.Error
		if err != nil && !(errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists) {
			return err
		}
	}
	var sel *imap.SelectData
	err := s.cmd("select", func() (err error) {
		sel, err = s.c.Select(w.cfg.Mailbox, nil).Wait()
		return err
	})
	if err != nil {
		return err
	}
	s.uidValidity = sel.UIDValidity
	val, err := w.cp.Checkpoint(ctx, w.key)
	if err != nil {
		return fmt.Errorf("imap: read checkpoint: %w", err)
	}
	uv, last, ok := parseCheckpoint(val)
	switch {
	case ok && uv == s.uidValidity:
		s.last = last
		return nil
	case val == "":
		w.log.Info("imap checkpoint missing, reading the whole mailbox", "uidvalidity", s.uidValidity)
	case !ok:
		w.log.Warn("imap checkpoint unreadable, reading the whole mailbox", "uidvalidity", s.uidValidity)
	default:
		w.log.Warn("imap uidvalidity changed, rescanning the mailbox", "old_uidvalidity", uv, "uidvalidity", s.uidValidity)
	}
	s.last = 0
	return s.checkpoint(ctx)
}

func (s *conn) checkpoint(ctx context.Context) error {
	v := strconv.FormatUint(uint64(s.uidValidity), 10) + "/" + strconv.FormatUint(uint64(s.last), 10)
	if err := s.w.cp.SetCheckpoint(ctx, s.w.key, v); err != nil {
		return fmt.Errorf("imap: save checkpoint: %w", err)
	}
	return nil
}

// parseCheckpoint reads "uidvalidity/uid".
func parseCheckpoint(v string) (uidValidity uint32, last imap.UID, ok bool) {
	a, b, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	uv, err1 := strconv.ParseUint(a, 10, 32)
	uid, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint32(uv), imap.UID(uid), true
}

// pending is a message above the checkpoint, as listed by catchUp.
type pending struct {
	uid      imap.UID
	size     int64
	received time.Time
}

// catchUp processes every message above the checkpoint, in UID order, and
// returns how many the handler accepted. It stops at the first error; the
// checkpoint then points just before the failed message.
func (s *conn) catchUp(ctx context.Context) (int, error) {
	select { // whatever the wake-up announced, this pass reads it
	case <-s.wake:
	default:
	}
	start := time.Now()
	// One UID FETCH lists what is new, with sizes: "last+1:*" also returns
	// the highest UID when it is <= last (RFC 3501 §6.4.8), so filter.
	var set imap.UIDSet
	set.AddRange(s.last+1, 0)
	var list []*imapclient.FetchMessageBuffer
	err := s.cmd("list new mail", func() (err error) {
		list, err = s.c.Fetch(set, &imap.FetchOptions{UID: true, RFC822Size: true, InternalDate: true}).Collect()
		return err
	})
	if err != nil {
		return 0, err
	}
	var todo []pending
	for _, m := range list {
		if m.UID > s.last {
			todo = append(todo, pending{uid: m.UID, size: m.RFC822Size, received: m.InternalDate})
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	slices.SortFunc(todo, func(a, b pending) int { return cmp.Compare(a.uid, b.uid) })

	n := 0
	for len(todo) > 0 {
		batch := s.nextBatch(todo)
		todo = todo[len(batch):]
		bodies, err := s.fetchBodies(batch)
		if err != nil {
			return n, err
		}
		k, err := s.process(ctx, batch, bodies)
		n += k
		if err != nil {
			return n, err
		}
	}
	s.w.log.Info("imap caught up", "messages", n, "last_uid", s.last, "took", time.Since(start).Round(time.Millisecond))
	return n, nil
}

// nextBatch takes up to fetchBatch messages and about fetchBatchBytes
// from the front of todo (always at least one).
func (s *conn) nextBatch(todo []pending) []pending {
	var bytes int64
	for i, p := range todo {
		if i == fetchBatch || (i > 0 && bytes+s.fetchSize(p) > fetchBatchBytes) {
			return todo[:i]
		}
		bytes += s.fetchSize(p)
	}
	return todo
}

// fetchSize is what fetching p costs: its size, or a header's worth when
// it is too big to read in full.
func (s *conn) fetchSize(p pending) int64 {
	if p.size > s.w.maxSize {
		return 64 << 10
	}
	return p.size
}

var (
	wholeBody  = &imap.FetchItemBodySection{Peek: true} // BODY.PEEK[]: leaves \Seen alone
	headerOnly = &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader}
)

// fetchBodies reads the batch's messages: whole, or only the header for
// those over the size limit.
func (s *conn) fetchBodies(batch []pending) (map[imap.UID][]byte, error) {
	var small, big []imap.UID
	var bytes int64
	for _, p := range batch {
		if p.size > s.w.maxSize {
			big = append(big, p.uid)
		} else {
			small = append(small, p.uid)
		}
		bytes += s.fetchSize(p)
	}
	out := make(map[imap.UID][]byte, len(batch))
	for _, part := range []struct {
		uids    []imap.UID
		section *imap.FetchItemBodySection
	}{{small, wholeBody}, {big, headerOnly}} {
		if len(part.uids) == 0 {
			continue
		}
		var msgs []*imapclient.FetchMessageBuffer
		d := s.w.cfg.Timeout + time.Duration(bytes/minRate)*time.Second
		err := s.wait("fetch", d, func() (err error) {
			msgs, err = s.c.Fetch(imap.UIDSetNum(part.uids...), &imap.FetchOptions{
				UID: true, BodySection: []*imap.FetchItemBodySection{part.section},
			}).Collect()
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if b := m.FindBodySection(part.section); b != nil {
				out[m.UID] = b
			}
		}
	}
	return out, nil
}

// process hands a batch's messages to the handler one by one, in UID
// order, and only then confirms those it accepted: one \Seen STORE (or
// MOVE) for all of them, then the checkpoint. One command per batch instead
// of per message matters on a big folder, where each Dovecot MOVE costs
// tens of milliseconds. A crash before the confirmation repeats at most a
// batch, which the handler's dedupe absorbs.
//
// A handler error stops the batch; the message is tried again later. A
// permanent one (envelope.IsPermanent: the message can never be accepted)
// must not hold up the mail behind it: that message is left unread in the
// mailbox for a person, logged, and passed by.
func (s *conn) process(ctx context.Context, batch []pending, bodies map[imap.UID][]byte) (int, error) {
	w := s.w
	if !s.begin() {
		return 0, fmt.Errorf("imap: %w", ctx.Err())
	}
	defer s.end()
	var done []imap.UID
	var passed imap.UID // last UID handled, refused or vanished, in order
	var herr error
	for _, p := range batch {
		raw, ok := bodies[p.uid]
		if !ok { // expunged meanwhile: nothing left to read
			w.log.Warn("imap message vanished before it was read", "uid", p.uid)
			passed = p.uid
			continue
		}
		if err := ctx.Err(); err != nil {
			herr = fmt.Errorf("imap: %w", err)
			break
		}
		start := time.Now()
		var size int64
		if p.size > w.maxSize {
			size = p.size // raw is the header only
		}
		in := w.parse(raw, size, w.cfg.Parse)
		if in.ReceivedAt.IsZero() {
			in.ReceivedAt = p.received
		}
		if err := w.h.HandleInbound(ctx, in); err != nil {
			if envelope.IsPermanent(err) {
				w.log.Error("imap message refused, left unread in the mailbox", "uid", p.uid, "err", err)
				passed = p.uid
				continue
			}
			herr = fmt.Errorf("imap: handle uid %d: %w", p.uid, err)
			break
		}
		done = append(done, p.uid)
		passed = p.uid
		w.log.Debug("imap message handled", "uid", p.uid, "size", p.size, "notes", len(in.Notes),
			"took", time.Since(start).Round(time.Microsecond))
	}
	if len(done) > 0 {
		// Committed: confirm even if ctx ends now (each command is bounded).
		if err := s.mark(imap.UIDSetNum(done...)); err != nil {
			return len(done), err
		}
	}
	if passed > s.last {
		s.last = passed
		if err := s.checkpoint(context.WithoutCancel(ctx)); err != nil {
			return len(done), err
		}
	}
	return len(done), herr
}

// mark confirms handled messages to the server: flag them \Seen, or move
// them.
func (s *conn) mark(set imap.UIDSet) error {
	to := s.w.cfg.MoveTo
	if to == "" {
		return s.cmd("store \\Seen", s.c.Store(set, &imap.StoreFlags{
			Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen},
		}, nil).Close)
	}
	caps := s.c.Caps()
	if caps.Has(imap.CapMove) {
		return s.cmd("move", func() error { _, err := s.c.Move(set, to).Wait(); return err })
	}
	// No MOVE: COPY, flag, expunge, one after the other. (go-imap's own
	// fallback pipelines them, and Dovecot was seen to skip the expunge.)
	if err := s.cmd("copy", func() error { _, err := s.c.Copy(set, to).Wait(); return err }); err != nil {
		return err
	}
	if err := s.cmd("store \\Deleted", s.c.Store(set, &imap.StoreFlags{
		Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen, imap.FlagDeleted},
	}, nil).Close); err != nil {
		return err
	}
	if !caps.Has(imap.CapUIDPlus) {
		// Only a plain EXPUNGE exists, which would also purge mail the
		// therapist marked deleted: leave it to her mail client.
		return nil
	}
	return s.cmd("uid expunge", s.c.UIDExpunge(set).Close)
}

// idle waits in IDLE until the server announces new mail or IdleRefresh
// passes, then ends IDLE so the caller can catch up.
func (s *conn) idle(ctx context.Context) error {
	var cmd *imapclient.IdleCommand
	err := s.cmd("idle", func() (err error) {
		cmd, err = s.c.Idle()
		return err
	})
	if err != nil {
		return err
	}
	if err := s.sleep(ctx, s.w.cfg.IdleRefresh); err != nil {
		return err
	}
	return s.cmd("end idle", func() error {
		if err := cmd.Close(); err != nil {
			return err
		}
		return cmd.Wait()
	})
}

// poll waits Poll (or for an EXISTS that arrived meanwhile) and sends a
// NOOP, which lets servers report new mail, before the next catch-up.
func (s *conn) poll(ctx context.Context) error {
	if err := s.sleep(ctx, s.w.cfg.Poll); err != nil {
		return err
	}
	return s.cmd("noop", s.c.Noop().Wait)
}

// sleep waits d, or less when new mail is announced; it fails when the
// server closes the connection or ctx ends.
func (s *conn) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.wake:
	case <-t.C:
	case <-s.c.Closed():
		return errors.New("imap: connection closed by server")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
