// Package sms is the Twilio SMS channel: it sends outbound messages through
// the Twilio Messages API. (The inbound webhook and status callbacks come
// later.)
package sms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/therapistinbox/gateway/gateway/envelope"
)

// DefaultTimeout bounds one send (connect, request and response) when
// SenderConfig.HTTPClient is nil or has no Timeout.
const DefaultTimeout = 10 * time.Second

// drainLimit is how much of an unread response body (bytes) is discarded
// before closing it, so the connection can usually be reused.
const drainLimit = 64 << 10

var (
	accountSIDRe = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	authTokenRe  = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)
	serviceSIDRe = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)
	// ITU-T E.164: "+", a non-zero country code digit, at most 15 digits.
	e164Re = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
)

// SenderConfig configures a Sender.
type SenderConfig struct {
	AccountSID string // "AC" + 32 hex
	AuthToken  string // 32 hex

	// From is the practice number in E.164 form. MessagingServiceSID
	// ("MG" + 32 hex) is used instead of From when set.
	From                string
	MessagingServiceSID string

	// StatusCallback is the full URL Twilio posts status changes to;
	// optional.
	StatusCallback string

	// APIBase, when set, sends requests to this loopback base URL
	// ("http://127.0.0.1:4010") instead of https://api.twilio.com. It is
	// for tests and the demo; twilio-go has no base URL option, so the
	// Sender rewrites each request's scheme and host.
	APIBase string

	// HTTPClient is optional. Its Transport is used for the requests and
	// its Timeout (DefaultTimeout when zero) bounds each send. Redirects
	// are not followed unless it sets CheckRedirect.
	HTTPClient *http.Client
}

// Sender sends SMS through the Twilio Messages API. It is safe for
// concurrent use.
type Sender struct {
	accountSID string
	authToken  string
	from       string
	serviceSID string
	callback   string
	apiBase    *url.URL // nil: api.twilio.com
	hc         http.Client
	base       http.RoundTripper
	timeout    time.Duration
}

var _ envelope.Sender = (*Sender)(nil)

// NewSender checks cfg and returns a Sender. It reports every problem at
// once.
func NewSender(cfg SenderConfig) (*Sender, error) {
	var errs []error
	if !accountSIDRe.MatchString(cfg.AccountSID) {
		errs = append(errs, errors.New(`sms: account sid must be "AC" followed by 32 hex digits`))
	}
	// twilio-go refuses non-alphanumeric credentials without sending
	// anything (PROTOCOLS §0.3), so catch a bad token here.
	if !authTokenRe.MatchString(cfg.AuthToken) {
		errs = append(errs, errors.New("sms: auth token must be 32 hex digits"))
	}
	switch {
	case cfg.MessagingServiceSID != "":
		if !serviceSIDRe.MatchString(cfg.MessagingServiceSID) {
			errs = append(errs, errors.New(`sms: messaging service sid must be "MG" followed by 32 hex digits`))
		}
	case cfg.From == "":
		errs = append(errs, errors.New("sms: set from (an E.164 number) or a messaging service sid"))
	}
	if cfg.From != "" && !e164Re.MatchString(cfg.From) {
		errs = append(errs, errors.New(`sms: from must be an E.164 number such as "+15550100001"`))
	}
	if cfg.StatusCallback != "" {
		u, err := url.Parse(cfg.StatusCallback)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("sms: status callback must be a full http(s) URL"))
		}
	}
	var base *url.URL
	if cfg.APIBase != "" {
		u, err := parseAPIBase(cfg.APIBase)
		if err != nil {
			errs = append(errs, err)
		}
		base = u
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	s := &Sender{
		accountSID: cfg.AccountSID,
		authToken:  cfg.AuthToken,
		from:       cfg.From,
		serviceSID: cfg.MessagingServiceSID,
		callback:   cfg.StatusCallback,
		apiBase:    base,
	}
	s.hc, s.base, s.timeout = httpSetup(cfg.HTTPClient)
	return s, nil
}

// httpSetup prepares a configured (optional) HTTP client for the
// per-call twilio-go clients of this package. It returns the client to
// copy for each call, the transport requests finally go through, and the
// time one call may take: cfg's Timeout, or DefaultTimeout when zero. The
// returned client has no Timeout: callers apply it through the context
// the callTransport attaches instead. Redirects are not followed unless
// cfg sets CheckRedirect.
func httpSetup(cfg *http.Client) (hc http.Client, base http.RoundTripper, timeout time.Duration) {
	timeout = DefaultTimeout
	if cfg != nil {
		hc = *cfg
	}
	if hc.Timeout > 0 {
		timeout = hc.Timeout
	}
	hc.Timeout = 0
	if hc.CheckRedirect == nil {
		// Like twilio-go's default client: never follow redirects.
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	base = hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	return hc, base, timeout
}

// messagesAPI returns a twilio-go client for one call whose requests all
// go through rt (which attaches the call's context and the API base).
// twilio-go takes no context, hence one client per call.
func messagesAPI(hc http.Client, rt *callTransport, accountSID, authToken string) *api.ApiService {
	hc.Transport = rt
	c := &client.Client{Credentials: client.NewCredentials(accountSID, authToken), HTTPClient: &hc}
	c.SetAccountSid(accountSID) // required when passing our own client, or the path has no SID
	// A bare RequestHandler (not client.NewRequestHandler) ignores the
	// TWILIO_EDGE and TWILIO_REGION variables, so the host is always
	// api.twilio.com unless the API base says otherwise.
	return api.NewApiService(&client.RequestHandler{Client: c})
}

// parseAPIBase accepts only http(s) URLs on a loopback host, with no path,
// so a misconfigured base can't send credentials to another machine.
func parseAPIBase(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New(`sms: api base must be an http(s) URL such as "http://127.0.0.1:4010"`)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New(`sms: api base must be scheme and host only, such as "http://127.0.0.1:4010"`)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errors.New("sms: api base must be a loopback address (127.0.0.1, [::1] or localhost)")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Send implements envelope.Sender for SMS. It returns the Twilio Message
// SID. Errors Twilio will keep giving (an unsubscribed or invalid number,
// bad credentials) are *envelope.PermanentError with the Twilio error code;
// all others (429, 5xx, network, timeout, an unreadable answer) are
// transient. Error strings never hold the number or the text.
func (s *Sender) Send(ctx context.Context, m envelope.Outbound) (envelope.ProviderID, error) {
	if m.Channel != "" && m.Channel != envelope.SMS {
		return "", fmt.Errorf("sms: send: %w", envelope.Permanent("", "not an sms message"))
	}
	if !e164Re.MatchString(m.To) {
		return "", fmt.Errorf("sms: send: %w", envelope.Permanent("", "recipient is not an E.164 number"))
	}
	if m.Text == "" {
		return "", fmt.Errorf("sms: send: %w", envelope.Permanent("", "empty message text"))
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("sms: send: %w", err)
	}

	// twilio-go takes no context, so each send gets its own client whose
	// transport attaches ctx (with the timeout) to the outgoing request.
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rt := &callTransport{ctx: cctx, base: s.base, apiBase: s.apiBase}
	defer rt.closeBodies()
	svc := messagesAPI(s.hc, rt, s.accountSID, s.authToken)

	p := &api.CreateMessageParams{}
	p.SetTo(m.To).SetBody(m.Text)
	if s.serviceSID != "" {
		p.SetMessagingServiceSid(s.serviceSID)
	} else {
		p.SetFrom(s.from)
	}
	if s.callback != "" {
		p.SetStatusCallback(s.callback)
	}

	msg, err := svc.CreateMessage(p)
	if err != nil {
		return "", s.mapError(ctx, cctx, rt.lastStatus(), err)
	}
	if msg.Sid == nil || *msg.Sid == "" {
		// Twilio may have accepted it; the outbox bounds retries.
		return "", fmt.Errorf("sms: send: http status %d: answer has no message sid", rt.lastStatus())
	}
	return envelope.ProviderID(*msg.Sid), nil
}

// mapError turns a twilio-go error into ours, per PROTOCOLS §2.4. It never
// wraps twilio-go's error, whose message may quote the number.
func (s *Sender) mapError(ctx, cctx context.Context, status int, err error) error {
	var tre *client.TwilioRestError
	if errors.As(err, &tre) {
		st := tre.Status
		if st == 0 {
			st = status
		}
		switch {
		case st == http.StatusTooManyRequests:
			return fmt.Errorf("sms: send: twilio status %d code %d: rate limited", st, tre.Code)
		case st >= 500:
			return fmt.Errorf("sms: send: twilio status %d code %d: twilio server error", st, tre.Code)
		case st >= 400:
			return fmt.Errorf("sms: send: %w", envelope.Permanent(strconv.Itoa(tre.Code), permanentReason(tre.Code, st)))
		default:
			return fmt.Errorf("sms: send: twilio status %d code %d: unexpected error answer", st, tre.Code)
		}
	}
	return transportError("sms: send", ctx, cctx, status, err)
}

// transportError describes a failure that is not a Twilio error answer
// (network, timeout, a non-JSON body) without wrapping twilio-go's error.
// All of these are transient. ctx is the caller's, cctx the call's own
// deadline, status the last HTTP status seen (0 if none).
func transportError(op string, ctx, cctx context.Context, status int, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case cctx.Err() != nil:
		return fmt.Errorf("%s: no answer in time: %w", op, cctx.Err())
	case status != 0:
		// A non-JSON body (a proxy's HTML 503) or an undecodable 2xx.
		return fmt.Errorf("%s: http status %d: unreadable answer", op, status)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// The inner error names the host and port at most.
		return fmt.Errorf("%s: %w", op, ue.Err)
	}
	return errors.New(op + ": request failed")
}

// permanentReason is a short reason for a Twilio error code that holds no
// client content (Twilio's own messages may quote the number).
func permanentReason(code, status int) string {
	switch code {
	case 21610:
		return "recipient unsubscribed (replied STOP)"
	case 21211:
		return "invalid recipient number"
	case 21614:
		return "recipient number cannot receive sms"
	case 21612:
		return "cannot route to recipient number"
	case 21408:
		return "sms to this region not enabled"
	case 21606, 21661:
		return "sender number cannot send sms"
	case 21617:
		return "message text too long"
	case 21602, 21619:
		return "message text missing"
	case 21608:
		return "recipient number not verified (trial account)"
	case 20003:
		return "twilio authentication failed; check account sid and auth token"
	}
	return "rejected by twilio (http " + strconv.Itoa(status) + ")"
}

// callTransport serves one Send: it attaches the send's context to each
// request, points it at the API base if one is set, and remembers the
// responses so their bodies can be closed (twilio-go leaves error bodies
// open).
type callTransport struct {
	ctx     context.Context
	base    http.RoundTripper
	apiBase *url.URL

	mu     sync.Mutex
	status int
	resps  []*http.Response
}

func (t *callTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(t.ctx)
	if t.apiBase != nil {
		r2.URL.Scheme = t.apiBase.Scheme
		r2.URL.Host = t.apiBase.Host
		r2.Host = t.apiBase.Host
	}
	resp, err := t.base.RoundTrip(r2)
	if resp != nil {
		t.mu.Lock()
		t.status = resp.StatusCode
		t.resps = append(t.resps, resp)
		t.mu.Unlock()
	}
	return resp, err
}

func (t *callTransport) lastStatus() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

func (t *callTransport) closeBodies() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, resp := range t.resps {
		io.CopyN(io.Discard, resp.Body, drainLimit)
		resp.Body.Close()
	}
	t.resps = nil
}
