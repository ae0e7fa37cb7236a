package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cmdLoad fires signed Twilio webhooks at a gateway on this machine and
// reports throughput and latency. It is bounded in count and time and
// refuses any target that is not loopback.
func cmdLoad(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	target := fs.String("url", "http://127.0.0.1:8080/twilio/sms", "webhook URL to post to (loopback only)")
	signed := fs.String("signed-url", "", "URL the gateway validates signatures against: its http.public_url + path (default: -url)")
	account := fs.String("account", "AC0123456789abcdef0123456789abcdef", "Twilio Account SID the gateway expects")
	token := fs.String("token", os.Getenv("GATEWAY_TWILIO_AUTH_TOKEN"), "Twilio auth token (env GATEWAY_TWILIO_AUTH_TOKEN)")
	n := fs.Int("n", 1000, "webhooks to send (at most 1,000,000)")
	c := fs.Int("c", 16, "concurrent senders")
	rate := fs.Float64("rate", 0, "webhooks per second in total (0: as fast as possible)")
	maxTime := fs.Duration("max-time", time.Minute, "stop after this long whatever is left")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := runLoad(ctx, loadConfig{URL: *target, SignedURL: *signed, Account: *account, Token: *token,
		N: *n, C: *c, Rate: *rate, MaxTime: *maxTime})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}

type loadConfig struct {
	URL, SignedURL, Account, Token string
	N, C                           int
	Rate                           float64
	MaxTime                        time.Duration
	// Body returns the i-th message text; default a routine message.
	Body func(i int) string
}

// loadResult summarises a run.
type loadResult struct {
	Sent, OK int
	Errors   map[string]int
	Elapsed  time.Duration
	lat      []time.Duration
}

func (r loadResult) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))]
}

func (r loadResult) String() string {
	var errs []string
	for k, v := range r.Errors {
		errs = append(errs, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(errs)
	return fmt.Sprintf("sent %d in %v: %.0f/s; ok %d; p50 %v p99 %v max %v; errors %d %v",
		r.Sent, r.Elapsed.Round(time.Millisecond), float64(r.Sent)/r.Elapsed.Seconds(), r.OK,
		r.quantile(0.5).Round(10*time.Microsecond), r.quantile(0.99).Round(10*time.Microsecond),
		r.quantile(1).Round(10*time.Microsecond), r.Sent-r.OK, errs)
}

func runLoad(ctx context.Context, cfg loadConfig) (loadResult, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return loadResult{}, fmt.Errorf("load: -url %q is not an http(s) URL", cfg.URL)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return loadResult{}, fmt.Errorf("load: -url must be on this machine (127.0.0.1, ::1 or localhost), not %s", u.Hostname())
	}
	if cfg.N < 1 || cfg.N > 1_000_000 || cfg.C < 1 || cfg.C > 1000 {
		return loadResult{}, fmt.Errorf("load: -n must be 1..1000000 and -c 1..1000")
	}
	if cfg.Token == "" {
		return loadResult{}, fmt.Errorf("load: no auth token; pass -token or set GATEWAY_TWILIO_AUTH_TOKEN")
	}
	if cfg.SignedURL == "" {
		cfg.SignedURL = cfg.URL
	}
	if cfg.Body == nil {
		cfg.Body = func(int) string { return "Could we move Thursday's session to the afternoon?" }
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancel()

	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.C}}
	var tick <-chan time.Time
	if cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
		defer t.Stop()
		tick = t.C
	}
	run := time.Now().UnixNano() % 1e9 // keeps MessageSids unique across runs
	var next atomic.Int64
	var mu sync.Mutex
	res := loadResult{Errors: map[string]int{}}
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.C {
		wg.Go(func() {
			var lat []time.Duration
			defer func() { mu.Lock(); res.lat = append(res.lat, lat...); mu.Unlock() }()
			for {
				i := int(next.Add(1))
				if i > cfg.N || ctx.Err() != nil {
					return
				}
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				form := url.Values{
					"AccountSid": {cfg.Account},
					"MessageSid": {fmt.Sprintf("SM%012d%020d", run, i)},
					"From":       {fmt.Sprintf("+1555%07d", i%10000)},
					"To":         {"+15550100000"},
					"Body":       {cfg.Body(i)},
					"NumMedia":   {"0"},
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("X-Twilio-Signature", twilioSignature(cfg.Token, cfg.SignedURL, form))
				t0 := time.Now()
				resp, err := client.Do(req)
				d := time.Since(t0)
				mu.Lock()
				res.Sent++
				switch {
				case err != nil:
					res.Errors["net"]++
				case resp.StatusCode/100 == 2:
					res.OK++
					lat = append(lat, d)
				default:
					res.Errors[fmt.Sprint(resp.StatusCode)]++
				}
				mu.Unlock()
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	slices.Sort(res.lat)
	return res, nil
}

// twilioSignature signs a form post the way Twilio does (PROTOCOLS §1.2):
// HMAC-SHA1 over the URL followed by every name and value, names sorted.
func twilioSignature(token, u string, form url.Values) string {
	names := make([]string, 0, len(form))
	for k := range form {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(u)
	for _, k := range names {
		b.WriteString(k)
		b.WriteString(form.Get(k))
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
