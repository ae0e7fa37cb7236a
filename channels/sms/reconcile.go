package sms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/mail"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Reconciler defaults.
const (
	DefaultReconcileEvery   = 5 * time.Minute
	DefaultReconcileOverlap = time.Hour
	DefaultReconcileLimit   = 5000
)

// CheckpointPrefix starts the name of each number's reconciliation
// checkpoint; the E.164 number follows it.
const CheckpointPrefix = "twilio:reconcile:"

const (
	// firstRunWindow is how far back a number with no checkpoint is listed.
	firstRunWindow = 24 * time.Hour
	// maxListPageSize is Twilio's largest PageSize.
	maxListPageSize = 1000
)

// Checkpoints stores where reconciliation got to (the gateway's store
// implements it). Checkpoint returns "" when name has no value.
type Checkpoints interface {
	Checkpoint(ctx context.Context, name string) (string, error)
	SetCheckpoint(ctx context.Context, name, value string) error
}

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	AccountSID string // "AC" + 32 hex
	AuthToken  string // 32 hex

	// Numbers are the practice numbers (E.164) whose inbound messages are
	// listed (To=...).
	Numbers []string

	// APIBase and HTTPClient are as in SenderConfig. The client's Timeout
	// (DefaultTimeout when zero) is allowed per page: one number's
	// listing may take Timeout times the pages Limit allows (1000 a page).
	APIBase    string
	HTTPClient *http.Client

	// Every is the time between passes (DefaultReconcileEvery when zero).
	Every time.Duration
	// Overlap is how far before the checkpoint each listing starts
	// (DefaultReconcileOverlap when zero): Twilio's date filter is coarse
	// and clocks differ.
	Overlap time.Duration
	// Limit is the most messages listed per number in one pass
	// (DefaultReconcileLimit when zero), so a bad day cannot page
	// forever. Twilio lists newest first: when the limit is hit, the
	// oldest messages of the window are not seen, which is logged as an
	// error.
	Limit int

	Logger *slog.Logger // nil: discard
}

// Reconciler catches inbound SMS whose webhook failed. Twilio does not
// retry an inbound webhook that got a 5xx or timed out (PROTOCOLS §1.5),
// so the Reconciler lists the messages Twilio received and hands each to
// the Handler, which dedupes on MessageSid.
type Reconciler struct {
	accountSID string
	authToken  string
	apiBase    *url.URL // nil: api.twilio.com
	hc         http.Client
	base       http.RoundTripper
	timeout    time.Duration // per page

	numbers []string
	every   time.Duration
	overlap time.Duration
	limit   int
	log     *slog.Logger

	h  envelope.Handler
	cp Checkpoints

	mu sync.Mutex // one pass at a time
}

// NewReconciler checks cfg and returns a Reconciler. It reports every
// problem at once.
func NewReconciler(cfg ReconcilerConfig, h envelope.Handler, cp Checkpoints) (*Reconciler, error) {
	var errs []error
	if !accountSIDRe.MatchString(cfg.AccountSID) {
		errs = append(errs, errors.New(`sms: account sid must be "AC" followed by 32 hex digits`))
	}
	if !authTokenRe.MatchString(cfg.AuthToken) {
		errs = append(errs, errors.New("sms: auth token must be 32 hex digits"))
	}
	if len(cfg.Numbers) == 0 {
		errs = append(errs, errors.New("sms: reconcile: no practice numbers"))
	}
	seen := make(map[string]bool)
	for i, n := range cfg.Numbers {
		switch {
		case !e164Re.MatchString(n):
			errs = append(errs, fmt.Errorf(`sms: reconcile: number #%d must be E.164, such as "+15550100001"`, i+1))
		case seen[n]:
			errs = append(errs, fmt.Errorf("sms: reconcile: number #%d is listed twice", i+1))
		}
		seen[n] = true
	}
	var base *url.URL
	if cfg.APIBase != "" {
		u, err := parseAPIBase(cfg.APIBase)
		if err != nil {
			errs = append(errs, err)
		}
		base = u
	}
	if cfg.Every < 0 || cfg.Overlap < 0 || cfg.Limit < 0 {
		errs = append(errs, errors.New("sms: reconcile: every, overlap and limit must not be negative"))
	}
	if h == nil || cp == nil {
		errs = append(errs, errors.New("sms: reconcile: handler and checkpoints are required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	r := &Reconciler{
		accountSID: cfg.AccountSID,
		authToken:  cfg.AuthToken,
		apiBase:    base,
		numbers:    slices.Clone(cfg.Numbers),
		every:      cmp.Or(cfg.Every, DefaultReconcileEvery),
		overlap:    cmp.Or(cfg.Overlap, DefaultReconcileOverlap),
		limit:      cmp.Or(cfg.Limit, DefaultReconcileLimit),
		log:        cfg.Logger,
		h:          h,
		cp:         cp,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.hc, r.base, r.timeout = httpSetup(cfg.HTTPClient)
	return r, nil
}

// Once lists the inbound messages to each number sent after its
// checkpoint minus Overlap (first run: the last 24 hours), hands every
// one to the Handler oldest first (it dedupes on MessageSid, so those
// already stored are harmless), and advances the checkpoint to the newest
// date_sent handled. It returns how many messages the Handler took. A
// failure stops that number's pass without advancing its checkpoint; the
// other numbers still run, and the errors are joined. Failures are logged
// here, with ids and counts only; the returned error wraps the Handler's
// or the store's error, so its text is only as clean as theirs.
func (r *Reconciler) Once(ctx context.Context) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	var errs []error
	for i, number := range r.numbers {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("sms: reconcile: %w", err))
			break
		}
		n, err := r.reconcile(ctx, i, number)
		total += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// Run calls Once at start and then every Every until ctx is done, and
// returns nil then. Failed passes are logged with counts only (Once logs
// the details); a panic in a pass is logged with its stack and the next
// pass runs as planned.
func (r *Reconciler) Run(ctx context.Context) error {
	r.log.Info("sms reconciler started", "numbers", len(r.numbers), "every", r.every)
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		r.runOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *Reconciler) runOnce(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			// The panic value may hold client content; the stack does not.
			r.log.Error("sms reconcile panicked", "stack", string(debug.Stack()))
		}
	}()
	start := time.Now()
	n, err := r.Once(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("sms reconcile pass failed", "handed", n, "failed_numbers", countErrors(err), "took", time.Since(start))
		}
		return
	}
	r.log.Debug("sms reconcile pass done", "handed", n, "took", time.Since(start))
}

// countErrors counts the errors joined in err.
func countErrors(err error) int {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return len(j.Unwrap())
	}
	return 1
}

// reconcile runs one number's pass; i is its index in numbers.
func (r *Reconciler) reconcile(ctx context.Context, i int, number string) (int, error) {
	name := CheckpointPrefix + number
	log := r.log.With("number_index", i+1, "checkpoint", CheckpointPrefix+"#"+strconv.Itoa(i+1))
	fail := func(stage string, err error, attrs ...any) error {
		log.Warn("sms reconcile: "+stage+" failed", append(attrs, "cause", reconcileCause(ctx, err))...)
		return fmt.Errorf("sms: reconcile: number #%d: %s: %w", i+1, stage, err)
	}

	raw, err := r.cp.Checkpoint(ctx, name)
	if err != nil {
		return 0, fail("read checkpoint", err)
	}
	var checkpoint time.Time
	since := time.Now().Add(-firstRunWindow)
	if raw != "" {
		checkpoint, err = time.Parse(time.RFC3339, raw)
		if err != nil {
			// A damaged value must not stop reconciliation for good.
			log.Warn("sms reconcile: unreadable checkpoint; listing the last 24 hours")
			checkpoint = time.Time{}
		} else {
			since = checkpoint.Add(-r.overlap)
		}
	}

	msgs, err := r.list(ctx, number, since)
	if err != nil {
		// list's errors are ours and hold no client content.
		log.Warn("sms reconcile: list failed", "err", err)
		return 0, fmt.Errorf("sms: reconcile: number #%d: %w", i+1, err)
	}
	listed := len(msgs)
	if listed >= r.limit {
		log.Error("sms reconcile: listing hit the limit; older messages in the window were not seen, check the Twilio console",
			"limit", r.limit, "since", since.UTC())
	}

	type entry struct {
		in   envelope.Inbound
		sent time.Time // zero when Twilio gave none
	}
	var todo []entry
	skipped := 0
	for _, m := range msgs {
		if listStr(m.Direction) != "inbound" {
			continue
		}
		if listStr(m.Sid) == "" {
			skipped++
			continue
		}
		in, sent := inboundFromList(m)
		todo = append(todo, entry{in, sent})
	}
	if skipped > 0 {
		log.Warn("sms reconcile: skipped inbound messages without a sid", "skipped", skipped)
	}
	// Oldest first, as they arrived.
	slices.SortStableFunc(todo, func(a, b entry) int {
		if c := a.sent.Compare(b.sent); c != 0 {
			return c
		}
		return cmp.Compare(a.in.ProviderID, b.in.ProviderID)
	})

	handed := 0
	var newest time.Time
	for _, e := range todo {
		if err := r.h.HandleInbound(ctx, e.in); err != nil {
			return handed, fail("handle", err, "sid", string(e.in.ProviderID), "handed", handed)
		}
		handed++
		if e.sent.After(newest) {
			newest = e.sent
		}
	}

	// Only ever forward: an overlap pass may see nothing newer.
	moved := newest.After(checkpoint)
	if moved {
		if err := r.cp.SetCheckpoint(ctx, name, newest.UTC().Format(time.RFC3339)); err != nil {
			return handed, fail("save checkpoint", err, "handed", handed)
		}
	}
	log.Debug("sms reconcile: number done", "listed", listed, "inbound", len(todo), "handed", handed,
		"checkpoint_moved", moved)
	return handed, nil
}

// list returns the messages to number sent on or after since, newest
// first, at most r.limit of them.
func (r *Reconciler) list(ctx context.Context, number string, since time.Time) ([]api.ApiV2010Message, error) {
	pageSize := min(r.limit, maxListPageSize)
	pages := (r.limit + pageSize - 1) / pageSize
	lctx, cancel := context.WithTimeout(ctx, time.Duration(pages)*r.timeout)
	defer cancel()
	rt := &callTransport{ctx: lctx, base: r.base, apiBase: r.apiBase}
	defer rt.closeBodies()
	svc := messagesAPI(r.hc, rt, r.accountSID, r.authToken)

	p := &api.ListMessageParams{}
	p.SetTo(number).SetDateSentAfter(since.UTC().Truncate(time.Second)).SetPageSize(pageSize).SetLimit(r.limit)
	msgs, err := svc.ListMessage(p)
	if err != nil {
		return nil, listError(ctx, lctx, rt.lastStatus(), err)
	}
	return msgs, nil
}

// listError turns a twilio-go list error into ours without wrapping it:
// Twilio's messages and the request URL can hold the number.
func listError(ctx, lctx context.Context, status int, err error) error {
	var tre *client.TwilioRestError
	if errors.As(err, &tre) {
		st := cmp.Or(tre.Status, status)
		reason := "twilio server error"
		switch {
		case st == http.StatusTooManyRequests:
			reason = "rate limited"
		case st >= 400 && st < 500:
			reason = permanentReason(tre.Code, st)
		}
		return fmt.Errorf("list messages: twilio status %d code %d: %s", st, tre.Code, reason)
	}
	return transportError("list messages", ctx, lctx, status, err)
}

// inboundFromList maps a listed message. The media URLs need a call per
// message, so attachments become a note instead.
func inboundFromList(m api.ApiV2010Message) (envelope.Inbound, time.Time) {
	in := envelope.Inbound{
		Channel:    envelope.SMS,
		ProviderID: envelope.ProviderID(listStr(m.Sid)),
		From:       listStr(m.From),
		To:         listStr(m.To),
		Text:       listStr(m.Body),
	}
	var sent time.Time
	if raw := listStr(m.DateSent); raw != "" {
		// RFC 2822, e.g. "Mon, 16 Nov 2026 19:00:00 +0000".
		if t, err := mail.ParseDate(raw); err == nil {
			sent = t.UTC()
		} else {
			in.Notes = append(in.Notes, "unreadable date_sent from Twilio; received time is approximate")
		}
	}
	in.ReceivedAt = sent
	switch raw := listStr(m.NumMedia); raw {
	case "", "0":
	case "1":
		in.Notes = append(in.Notes, "1 media attachment; see the Twilio console")
	default:
		if n, err := strconv.Atoi(raw); err == nil && n > 0 {
			in.Notes = append(in.Notes, fmt.Sprintf("%d media attachments; see the Twilio console", n))
		} else {
			in.Notes = append(in.Notes, "unreadable num_media from Twilio; attachments may be missing")
		}
	}
	return in, sent
}

// reconcileCause says why a handler or store call failed without quoting
// its error, which may come from below and echo a number.
func reconcileCause(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	}
	return "error"
}

func listStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
