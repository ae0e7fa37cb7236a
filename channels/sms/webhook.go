package sms

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/twilio/twilio-go/client"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// DefaultMaxBody is the largest webhook body (bytes) read when
// WebhookConfig.MaxBody is zero. Twilio's posts are a few KiB at most
// (Body is at most 1600 characters).
const DefaultMaxBody = 64 << 10

// emptyTwiML acknowledges an inbound message without replying
// (PROTOCOLS §1.6). Never answer text/plain: Twilio would send it to the
// texter as an SMS.
const emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response></Response>`

// WebhookConfig says how Twilio's requests are checked.
type WebhookConfig struct {
	AuthToken  string // the primary auth token: HMAC key for X-Twilio-Signature
	AccountSID string // requests for another account are refused (403)
	PublicURL  string // the gateway's public base URL as configured in Twilio, e.g. "https://gw.example.org" (behind a TLS proxy it differs from the listen address); the signed URL is PublicURL + request path + ("?" + raw query when present), fragment never included
	MaxBody    int64  // bytes; default 64 KiB
	Logger     *slog.Logger
}

// Webhook receives Twilio's incoming-message webhooks and status
// callbacks. It checks each request's X-Twilio-Signature against the
// public URL (never the listen address) and hands what it read to the
// gateway. It is safe for concurrent use.
type Webhook struct {
	validator  client.RequestValidator
	accountSID string
	publicURL  string // scheme, host and optional path prefix; no trailing "/", query or fragment
	maxBody    int64
	log        *slog.Logger
	h          envelope.Handler
	st         envelope.StatusHandler
}

// NewWebhook checks cfg and returns a Webhook that hands inbound messages
// to h and delivery reports to st. It reports every problem at once.
//
// The auth token is only required to be non-empty: the validator takes any
// string, unlike the REST client (PROTOCOLS §0.3).
func NewWebhook(cfg WebhookConfig, h envelope.Handler, st envelope.StatusHandler) (*Webhook, error) {
	var errs []error
	if cfg.AuthToken == "" {
		errs = append(errs, errors.New("sms: webhook: auth token is required to check X-Twilio-Signature"))
	}
	if !accountSIDRe.MatchString(cfg.AccountSID) {
		errs = append(errs, errors.New(`sms: webhook: account sid must be "AC" followed by 32 hex digits`))
	}
	pub, err := parsePublicURL(cfg.PublicURL)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.MaxBody < 0 {
		errs = append(errs, errors.New("sms: webhook: max body must be positive, or 0 for the default (64 KiB)"))
	}
	if h == nil {
		errs = append(errs, errors.New("sms: webhook: inbound handler is required"))
	}
	if st == nil {
		errs = append(errs, errors.New("sms: webhook: status handler is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	w := &Webhook{
		validator:  client.NewRequestValidator(cfg.AuthToken),
		accountSID: cfg.AccountSID,
		publicURL:  pub,
		maxBody:    cfg.MaxBody,
		log:        cfg.Logger,
		h:          h,
		st:         st,
	}
	if w.maxBody == 0 {
		w.maxBody = DefaultMaxBody
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w, nil
}

// parsePublicURL accepts an absolute http(s) URL with an optional path
// prefix. A fragment (Twilio's connection overrides, "#rc=3&rp=all") is
// dropped, since Twilio never signs it (PROTOCOLS §1.5); a query is
// refused, since the request's own query is appended to the path.
func parsePublicURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New(`sms: webhook: public url must be the full http(s) base URL Twilio calls, such as "https://gw.example.org"`)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery {
		return "", errors.New(`sms: webhook: public url must be scheme, host and optional path only, such as "https://gw.example.org"`)
	}
	u.Fragment, u.RawFragment = "", ""
	return strings.TrimSuffix(u.String(), "/"), nil
}

// Inbound handles Twilio's incoming-message webhook (mount at POST /twilio/sms).
func (w *Webhook) Inbound() http.Handler {
	return http.HandlerFunc(w.serveInbound)
}

// Status handles status callbacks (mount at POST /twilio/status).
func (w *Webhook) Status() http.Handler {
	return http.HandlerFunc(w.serveStatus)
}

// exchange is one webhook request: what is logged about it, and its
// answer. Only ids go in the log, never numbers, text or the signature
// (STYLE §6).
type exchange struct {
	w     http.ResponseWriter
	log   *slog.Logger
	kind  string
	start time.Time
	attrs []any
}

// finish logs the one line for the request and answers with code. It
// logs first, so the line is written by the time Twilio has its answer.
func (x *exchange) finish(code int, outcome string) {
	level := slog.LevelInfo
	switch {
	case code >= 500:
		level = slog.LevelError
	case code >= 400:
		level = slog.LevelWarn
	}
	d := time.Since(x.start)
	attrs := append([]any{
		"kind", x.kind,
		"outcome", outcome,
		"status", code,
		"duration_ms", float64(d.Microseconds()) / 1000,
	}, x.attrs...)
	x.log.Log(context.Background(), level, "twilio webhook", attrs...)

	switch code {
	case http.StatusMethodNotAllowed:
		x.w.Header().Set("Allow", http.MethodPost)
		x.w.WriteHeader(code)
	case http.StatusOK:
		x.w.Header().Set("Content-Type", "text/xml")
		x.w.WriteHeader(code)
		io.WriteString(x.w, emptyTwiML)
	default:
		// No body: Twilio only logs non-2xx answers, and a text/plain
		// body must never look like a reply.
		x.w.WriteHeader(code)
	}
}

// readSigned runs the checks both endpoints share: method, size, form,
// signature and account. It returns the posted form, or false once it
// has answered.
func (w *Webhook) readSigned(x *exchange, r *http.Request) (url.Values, bool) {
	if r.Method != http.MethodPost {
		x.finish(http.StatusMethodNotAllowed, "method not allowed")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(x.w, r.Body, w.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			x.finish(http.StatusRequestEntityTooLarge, "body too large")
		} else {
			x.finish(http.StatusBadRequest, "body unreadable")
		}
		return nil, false
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		x.finish(http.StatusBadRequest, "malformed form")
		return nil, false
	}
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" {
		x.finish(http.StatusForbidden, "missing signature")
		return nil, false
	}
	// Every posted parameter is signed, including ones Twilio adds later
	// (PROTOCOLS §1.1), so none is left out; the first value of each, as
	// ValidateBody does.
	params := make(map[string]string, len(form))
	for k, v := range form {
		params[k] = v[0]
	}
	if !w.validator.Validate(w.signedURL(r), params, sig) {
		x.finish(http.StatusForbidden, "bad signature")
		return nil, false
	}
	// From here on the ids are Twilio's own, so they may be logged.
	if sid := form.Get("MessageSid"); sid != "" {
		x.attrs = append(x.attrs, "message_sid", sid)
	}
	if tok := r.Header.Get("I-Twilio-Idempotency-Token"); tok != "" {
		x.attrs = append(x.attrs, "idempotency_token", tok)
	}
	if form.Get("AccountSid") != w.accountSID {
		x.finish(http.StatusForbidden, "wrong account")
		return nil, false
	}
	return form, true
}

// signedURL is the URL Twilio signed: the configured public URL, the
// request path and its raw query, as they arrived. The listen address and
// Host header are never used, so a TLS proxy in front does not matter
// (PROTOCOLS §1.2).
func (w *Webhook) signedURL(r *http.Request) string {
	u := w.publicURL + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}

func (w *Webhook) serveInbound(rw http.ResponseWriter, r *http.Request) {
	x := &exchange{w: rw, log: w.log, kind: "inbound", start: time.Now()}
	form, ok := w.readSigned(x, r)
	if !ok {
		return
	}
	sid, from := form.Get("MessageSid"), form.Get("From")
	if sid == "" || from == "" {
		x.finish(http.StatusBadRequest, "missing MessageSid or From")
		return
	}
	// To is not checked against our number: numbers in a Messaging
	// Service pool post with their own To.
	in := envelope.Inbound{
		Channel:    envelope.SMS,
		ProviderID: envelope.ProviderID(sid),
		From:       from,
		To:         form.Get("To"),
		Text:       form.Get("Body"),
		OptOut:     form.Get("OptOutType"),
	}
	in.Attachments, in.Notes = media(form)
	if len(in.Attachments) > 0 {
		x.attrs = append(x.attrs, "media", len(in.Attachments))
	}
	// A repeated MessageSid (an override retry, the fallback URL, a
	// replay) is the handler's business: it dedupes, and we answer 200
	// again.
	if err := w.h.HandleInbound(r.Context(), in); err != nil {
		// Twilio does not retry a 5xx by default (PROTOCOLS §0.6);
		// reconciliation picks the message up. The error text is not
		// logged: it may come from below us and echo the number.
		x.finish(http.StatusInternalServerError, "handler failed: "+cause(r.Context(), err))
		return
	}
	x.finish(http.StatusOK, "stored")
}

func (w *Webhook) serveStatus(rw http.ResponseWriter, r *http.Request) {
	x := &exchange{w: rw, log: w.log, kind: "status", start: time.Now()}
	form, ok := w.readSigned(x, r)
	if !ok {
		return
	}
	s := envelope.Status{
		Channel:    envelope.SMS,
		ProviderID: envelope.ProviderID(form.Get("MessageSid")),
		State:      form.Get("MessageStatus"),
		ErrorCode:  form.Get("ErrorCode"),
	}
	if s.ProviderID == "" || s.State == "" {
		x.finish(http.StatusBadRequest, "missing MessageSid or MessageStatus")
		return
	}
	x.attrs = append(x.attrs, "message_status", s.State)
	if s.ErrorCode != "" {
		x.attrs = append(x.attrs, "error_code", s.ErrorCode)
	}
	if err := w.st.HandleStatus(r.Context(), s); err != nil {
		x.finish(http.StatusInternalServerError, "handler failed: "+cause(r.Context(), err))
		return
	}
	x.finish(http.StatusNoContent, "recorded")
}

// cause says why a handler failed without quoting its error.
func cause(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return "request canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	}
	return "error"
}

// media reads MediaUrlN and MediaContentTypeN (zero-based) for N below
// NumMedia. A problem becomes a note for the digest; the message is kept.
func media(form url.Values) ([]envelope.Attachment, []string) {
	raw := form.Get("NumMedia")
	if raw == "" || raw == "0" {
		return nil, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 {
		return nil, []string{"unreadable NumMedia from Twilio; attachments may be missing"}
	}
	// The posted params bound the loop, whatever NumMedia claims.
	n = min(n, len(form))
	var atts []envelope.Attachment
	var notes []string
	missing := 0
	for i := range n {
		idx := strconv.Itoa(i)
		mu := form.Get("MediaUrl" + idx)
		if mu == "" {
			missing++
			continue
		}
		a := envelope.Attachment{URL: mu, Type: form.Get("MediaContentType" + idx)}
		if u, err := url.Parse(mu); err == nil && u.Path != "" {
			if base := path.Base(u.Path); base != "/" && base != "." {
				a.Name = base
			}
		}
		atts = append(atts, a)
	}
	if missing > 0 {
		notes = append(notes, strconv.Itoa(missing)+" media URL(s) missing from Twilio's post")
	}
	return atts, notes
}
