package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/therapistinbox/gateway/channels/email"
	"github.com/therapistinbox/gateway/channels/sms"
	"github.com/therapistinbox/gateway/gateway"
	"github.com/therapistinbox/gateway/gateway/envelope"
	"github.com/therapistinbox/gateway/policies"
	"github.com/therapistinbox/gateway/schedule"
)

// The gateway talks to the channels through these interfaces only.
var (
	_ envelope.Sender        = (*sms.Sender)(nil)
	_ envelope.Sender        = (*email.Sender)(nil)
	_ envelope.Handler       = (*gateway.Dispatcher)(nil)
	_ envelope.StatusHandler = (*gateway.StatusRecorder)(nil)
)

// Shutdown budgets.
const (
	httpShutdown  = 5 * time.Second  // in-flight webhooks finish
	drainShutdown = 20 * time.Second // in-flight sends finish
	purgeEvery    = 6 * time.Hour
)

// Main is the running gateway: the store, dispatcher, outbox worker,
// check-in runner and HTTP server, wired from the config.
type Main struct {
	Config *Config
	Logger *slog.Logger
	// SMTPRoots, when set, are trusted for the SMTP server's certificate
	// (tests and the demo use self-signed ones).
	SMTPRoots *x509.CertPool
	IMAPRoots *x509.CertPool // the same, for the IMAP server

	Store      *gateway.Store
	Dispatcher *gateway.Dispatcher
	Outbox     *gateway.Outbox
	Digester   *gateway.Digester
	Runner     *schedule.Runner
	Escalator  *gateway.Escalator
	Reconciler *sms.Reconciler // nil when SMS is off
	Watcher    *email.Watcher  // nil when email is off

	ln       net.Listener
	http     *http.Server
	started  time.Time
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	runnerUp atomic.Bool
}

// newLogger is the daemon's logger: JSON lines on w. Nothing logged
// anywhere in the gateway carries message text or addresses.
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Open builds everything from the config and starts listening, but runs
// no background work yet.
func (m *Main) Open(ctx context.Context) error {
	c := m.Config
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
	cal, err := c.Calendar()
	if err != nil {
		return fmt.Errorf("config: checkins: %w", err)
	}
	wording, err := policies.NewWording(c.wordingOverrides())
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	triage, err := c.NewTriage()
	if err != nil {
		return fmt.Errorf("config: triage: %w", err)
	}
	senders, err := m.senders()
	if err != nil {
		return err
	}
	if m.Store, err = gateway.Open(ctx, c.Store.Path); err != nil {
		return err
	}
	if err := m.seedClients(ctx); err != nil {
		m.Store.Close()
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := gateway.NewMetrics(reg, m.Store)
	practice := c.PracticeInfo()
	m.Outbox = &gateway.Outbox{
		Store: m.Store, Senders: senders, Metrics: metrics, Logger: m.Logger.With("component", "outbox"),
		Concurrency: c.Outbox.Concurrency, MaxAttempts: c.Outbox.MaxAttempts,
		BaseDelay: c.Outbox.BaseDelay, MaxDelay: c.Outbox.MaxDelay,
	}
	m.Dispatcher = &gateway.Dispatcher{
		Store: m.Store, Calendar: cal, Triage: triage, Wording: wording,
		Ack:      policies.AckPolicy{Repeat: c.Acks.Repeat, BriefAfter: c.Acks.BriefAfter},
		Practice: practice, Outbox: m.Outbox, Metrics: metrics, Logger: m.Logger.With("component", "dispatch"),
	}
	m.Digester = &gateway.Digester{Store: m.Store, Practice: practice, Outbox: m.Outbox}
	m.Escalator = &gateway.Escalator{Store: m.Store, Practice: practice, Calendar: cal, Outbox: m.Outbox,
		Metrics: metrics, Logger: m.Logger.With("component", "escalate")}
	m.Outbox.OnPageFailed = m.Escalator.Kick
	m.Runner = &schedule.Runner{
		Calendar: cal,
		Fire: func(ctx context.Context, at time.Time) error {
			_, err := m.Digester.CheckIn(ctx, at, false)
			return err
		},
		Last:   m.Store.LastCheckin,
		Logger: m.Logger.With("component", "checkins"),
	}

	mux := http.NewServeMux()
	if c.SMS.Enabled {
		wh, err := sms.NewWebhook(sms.WebhookConfig{
			AuthToken: c.SMS.AuthToken, AccountSID: c.SMS.AccountSID, PublicURL: c.HTTP.PublicURL,
			Logger: m.Logger.With("component", "twilio"),
		}, m.Dispatcher, &gateway.StatusRecorder{Store: m.Store, Metrics: metrics, Outbox: m.Outbox, OnPageFailed: m.Escalator.Kick})
		if err != nil {
			m.Store.Close()
			return fmt.Errorf("config: sms: %w", err)
		}
		mux.Handle("POST /twilio/sms", wh.Inbound())
		mux.Handle("POST /twilio/status", wh.Status())
		numbers := c.SMS.Numbers
		if len(numbers) == 0 {
			numbers = []string{c.SMS.From}
		}
		m.Reconciler, err = sms.NewReconciler(sms.ReconcilerConfig{
			AccountSID: c.SMS.AccountSID, AuthToken: c.SMS.AuthToken, Numbers: numbers, APIBase: c.SMS.APIBase,
			Every: c.SMS.ReconcileEvery, Logger: m.Logger.With("component", "reconcile"),
		}, m.Dispatcher, m.Store)
		if err != nil {
			m.Store.Close()
			return fmt.Errorf("config: sms: %w", err)
		}
	}
	// The signed one-time link is the permission: no admin token.
	mux.Handle("/ack/", m.Escalator.AckHandler())
	if c.Email.Enabled {
		im := c.Email.IMAP
		m.Watcher, err = email.NewWatcher(email.IMAPConfig{
			Addr: im.Addr, Security: im.Security, AllowPlain: im.AllowPlain,
			Username: im.Username, Password: im.Password,
			Mailbox: c.Email.Mailbox, MoveTo: c.Email.MoveTo, Poll: c.Email.PollEvery,
			TLSConfig: tlsRoots(m.IMAPRoots),
			Parse: email.ParseOptions{
				MaxSize: int64(c.Email.MaxSizeMB) << 20,
				Ours:    []string{c.Email.Address},
			},
			Logger: m.Logger.With("component", "imap"),
		}, m.Dispatcher, m.Store)
		if err != nil {
			m.Store.Close()
			return fmt.Errorf("config: email.imap: %w", err)
		}
	}
	mux.HandleFunc("GET /healthz", m.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn)}
	if m.ln, err = net.Listen("tcp", c.HTTP.Listen); err != nil {
		m.Store.Close()
		return fmt.Errorf("http.listen: %w", err)
	}
	return nil
}

// senders builds one sender per configured channel.
func (m *Main) senders() (map[envelope.Channel]envelope.Sender, error) {
	c := m.Config
	out := map[envelope.Channel]envelope.Sender{}
	mail, err := email.NewSender(email.SMTPConfig{
		Addr: c.Email.SMTP.Addr, Security: c.Email.SMTP.Security, AllowPlain: c.Email.SMTP.AllowPlain,
		Username: c.Email.SMTP.Username, Password: c.Email.SMTP.Password,
		From: c.Email.Address, FromName: c.Email.FromName, TLSConfig: tlsRoots(m.SMTPRoots),
	})
	if err != nil {
		return nil, fmt.Errorf("config: email.smtp: %w", err)
	}
	out[envelope.Email] = mail
	if c.SMS.Enabled {
		s, err := sms.NewSender(sms.SenderConfig{
			AccountSID: c.SMS.AccountSID, AuthToken: c.SMS.AuthToken, From: c.SMS.From,
			MessagingServiceSID: c.SMS.MessagingServiceSID, APIBase: c.SMS.APIBase,
			StatusCallback: statusCallbackURL(c.HTTP.PublicURL),
		})
		if err != nil {
			return nil, fmt.Errorf("config: sms: %w", err)
		}
		out[envelope.SMS] = s
	}
	return out, nil
}

// statusCallbackURL is where Twilio reports delivery status.
func statusCallbackURL(public string) string {
	if public == "" {
		return ""
	}
	return strings.TrimRight(public, "/") + "/twilio/status"
}

// seedClients files the configured client list.
func (m *Main) seedClients(ctx context.Context) error {
	for i, cl := range m.Config.Clients {
		var addrs []gateway.ClientAddress
		if cl.Phone != "" {
			p, _ := gateway.NormalizePhone(cl.Phone, m.Config.Practice.PhoneRegion)
			addrs = append(addrs, gateway.ClientAddress{Channel: envelope.SMS, Address: string(p)})
		}
		if cl.Email != "" {
			a, _ := gateway.NormalizeEmail(cl.Email)
			addrs = append(addrs, gateway.ClientAddress{Channel: envelope.Email, Address: string(a)})
		}
		if err := m.Store.UpsertClient(ctx, cl.FirstName, addrs); err != nil {
			return fmt.Errorf("clients[%d]: %w", i, err)
		}
	}
	return nil
}

// Addr is the HTTP listener's address.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// Start runs the HTTP server, the outbox worker, the check-in runner and
// the retention purge in the background until Close.
func (m *Main) Start(ctx context.Context) {
	ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.started = time.Now()
	m.wg.Add(4)
	go func() {
		defer m.wg.Done()
		if err := m.http.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		defer m.wg.Done()
		m.Outbox.Run(ctx)
	}()
	go func() {
		defer m.wg.Done()
		m.runnerUp.Store(true)
		defer m.runnerUp.Store(false)
		if err := m.Runner.Run(ctx); err != nil {
			m.Logger.Error("check-in runner stopped", "err", err)
		}
	}()
	go func() {
		defer m.wg.Done()
		m.purgeLoop(ctx)
	}()
	m.wg.Go(func() {
		if err := m.Escalator.Run(ctx); err != nil && ctx.Err() == nil {
			m.Logger.Error("escalator stopped", "err", err)
		}
	})
	if m.Reconciler != nil {
		m.wg.Go(func() { m.Reconciler.Run(ctx) })
	}
	if m.Watcher != nil {
		m.wg.Go(func() {
			if err := m.Watcher.Run(ctx); err != nil && ctx.Err() == nil {
				m.Logger.Error("imap watcher stopped", "err", err)
			}
		})
	}
}

// purgeLoop deletes delivered messages past the retention period.
func (m *Main) purgeLoop(ctx context.Context) {
	for {
		before := time.Now().AddDate(0, 0, -m.Config.Store.RetentionDays)
		if n, err := m.Store.Purge(ctx, before); err != nil && ctx.Err() == nil {
			m.Logger.Error("purge failed", "err", err)
		} else if n > 0 {
			m.Logger.Info("purged delivered messages", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(purgeEvery):
		}
	}
}

// Close stops taking work (HTTP, check-ins), lets in-flight sends finish
// for a short while, then closes the database.
func (m *Main) Close() error {
	if m.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdown)
		m.http.Shutdown(sctx)
		cancel()
	}
	if m.cancel != nil {
		m.cancel()
		done := make(chan struct{})
		go func() { m.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(drainShutdown):
			m.Logger.Warn("shutdown: sends still in flight; they will be retried at next start")
		}
	}
	if m.Store != nil {
		return m.Store.Close()
	}
	return nil
}

// DigestNow runs a check-in by hand and delivers its digest at once,
// returning whether the mail server accepted it.
func (m *Main) DigestNow(ctx context.Context) (id int64, sent bool, err error) {
	id, err = m.Digester.CheckIn(ctx, time.Now(), true)
	if err != nil || id == 0 {
		return id, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := m.Outbox.Flush(ctx); err != nil {
		return id, false, err
	}
	// A running worker may have taken the digest first: wait while it is
	// in flight, not while a retry is scheduled.
	for {
		digest, row, err := m.Store.DigestStatus(ctx, id)
		if err != nil || digest != "pending" || row != "sending" {
			return id, digest == "sent", err
		}
		select {
		case <-ctx.Done():
			return id, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// health is what /healthz reports.
type health struct {
	Status      string    `json:"status"`
	Store       string    `json:"store"`
	Outbox      string    `json:"outbox"`
	Checkins    string    `json:"checkins"`
	Escalation  string    `json:"escalation"`
	Email       string    `json:"email,omitempty"`
	LastCheckin time.Time `json:"last_checkin,omitzero"`
	NextCheckin time.Time `json:"next_checkin,omitzero"`
}

func (m *Main) healthz(w http.ResponseWriter, r *http.Request) {
	h := health{Status: "ok", Store: "ok", Outbox: "ok", Checkins: "ok", Escalation: "ok"}
	if err := m.Store.Ping(r.Context()); err != nil {
		h.Status, h.Store = "fail", "unreachable"
	}
	if alive := m.Outbox.Alive(); time.Since(alive) > 10*time.Minute {
		h.Status, h.Outbox = "fail", "stalled"
	}
	// The escalator turns at least once a minute.
	if alive := m.Escalator.Alive(); time.Since(alive) > 5*time.Minute {
		h.Status, h.Escalation = "fail", "stalled"
	}
	if m.Watcher != nil {
		// A reconnect is normal; an hour without reaching the mailbox is not.
		h.Email = "ok"
		if !m.Watcher.Healthy() {
			h.Email = "reconnecting"
			if time.Since(m.Watcher.LastSync()) > time.Hour && time.Since(m.started) > time.Hour {
				h.Status, h.Email = "fail", "unreachable"
			}
		}
	}
	if !m.runnerUp.Load() {
		h.Status, h.Checkins = "fail", "stopped"
	}
	if t, err := m.Store.LastCheckin(r.Context()); err == nil {
		h.LastCheckin = t
	}
	h.NextCheckin = m.Runner.Calendar.Next(time.Now())
	w.Header().Set("Content-Type", "application/json")
	if h.Status != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(h)
}

// tlsRoots is a TLS config trusting roots, or nil for the system's.
func tlsRoots(roots *x509.CertPool) *tls.Config {
	if roots == nil {
		return nil
	}
	return &tls.Config{RootCAs: roots}
}
