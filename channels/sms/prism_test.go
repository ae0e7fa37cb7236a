package sms_test

// Tests against Stoplight Prism in mock mode, which checks every request
// against Twilio's published OpenAPI description of the 2010-04-01 API
// (testdata/twilio/twilio_api_v2010.json, MIT, see LICENSE.twilio-oai) and
// answers a request that breaks it with 422 and the reasons. Prism is
// installed with npm from the pinned testdata/twilio/package-lock.json
// into the user cache directory the first time; without npm the tests
// skip, or fail when CI is set.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/sms"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

const prismDir = "testdata/twilio"

// prismExchange is one request to Prism and its answer.
type prismExchange struct {
	Method, Path string
	Query        url.Values
	Form         url.Values // the POSTed form, if any
	Status       int
	Body         string // Prism's answer; for a 422, the reasons
}

func (e prismExchange) String() string {
	return fmt.Sprintf("%s %s -> %d %s", e.Method, e.Path, e.Status, e.Body)
}

// prismRecorder is a transport that keeps every exchange.
type prismRecorder struct {
	mu sync.Mutex
	ex []prismExchange
}

func (p *prismRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	e := prismExchange{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query()}
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		e.Form, _ = url.ParseQuery(string(b))
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	e.Status, e.Body = resp.StatusCode, string(b)
	p.mu.Lock()
	p.ex = append(p.ex, e)
	p.mu.Unlock()
	return resp, err
}

// take returns the exchanges since the last call.
func (p *prismRecorder) take() []prismExchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	ex := p.ex
	p.ex = nil
	return ex
}

// prismUnavailable skips the test, or fails it when CI is set.
func prismUnavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("prism: "+format+" (CI is set, so this is a failure)", args...)
	}
	t.Skipf("prism: "+format+"; skipping (set CI to make this a failure)", args...)
}

// installPrism returns the path of the prism command, installing the
// pinned version with npm ci into the user cache directory, keyed by the
// hash of the package files, when it is not there yet. Installs go to a
// temporary directory renamed into place, so concurrent test processes
// never see half an install.
func installPrism(t *testing.T) (string, error) {
	t.Helper()
	pkg, err := os.ReadFile(filepath.Join(prismDir, "package.json"))
	if err != nil {
		return "", err
	}
	lock, err := os.ReadFile(filepath.Join(prismDir, "package-lock.json"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append(pkg, 0), lock...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root := filepath.Join(cache, "gateway-test", "prism")
	dir := filepath.Join(root, hex.EncodeToString(sum[:8]))
	bin := filepath.Join(dir, "node_modules", ".bin", "prism")
	marker := filepath.Join(dir, ".installed")
	if _, err := os.Stat(marker); err == nil {
		return bin, nil
	}

	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("npm is not on PATH (install Node.js 20 and npm)")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(root, ".install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // gone already after a successful rename
	for name, b := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return "", err
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefix", tmp, "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci failed: %v\n%s", err, lastLines(string(out), 30))
	}
	if _, err := os.Stat(filepath.Join(tmp, "node_modules", ".bin", "prism")); err != nil {
		return "", fmt.Errorf("npm ci installed no prism command: %v", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".installed"), nil, 0o644); err != nil {
		return "", err
	}
	if _, err := os.Stat(marker); err == nil {
		return bin, nil // another test process finished first
	}
	os.RemoveAll(dir) // a broken earlier attempt
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(marker); serr == nil {
			return bin, nil
		}
		return "", err
	}
	t.Logf("installed prism into %s in %v", dir, time.Since(start).Round(time.Millisecond))
	return bin, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// startPrism starts Prism in mock mode on a free loopback port with the
// same flags as peers/twilio.sh (no --errors: some of Twilio's own
// examples break its response schemas) and returns its base URL. It is
// stopped when the test ends.
func startPrism(t *testing.T) string {
	t.Helper()
	bin, err := installPrism(t)
	if err != nil {
		prismUnavailable(t, "%v", err)
	}
	spec, err := filepath.Abs(filepath.Join(prismDir, "twilio_api_v2010.json"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)

	out := &recLogs{}
	cmd := exec.Command(bin, "mock", "-h", "127.0.0.1", "-p", port, spec)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prism: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prism output (last lines):\n%s", lastLines(out.String(), 40))
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("prism exited before listening on %s: %v\n%s", addr, cmd.ProcessState, lastLines(out.String(), 40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prism did not listen on %s within 60s:\n%s", addr, lastLines(out.String(), 40))
		}
	}
	t.Logf("prism listening on %s after %v", addr, time.Since(start).Round(time.Millisecond))
	return "http://" + addr
}

// TestPrism sends and lists messages through the Twilio API mock that
// validates each request against Twilio's OpenAPI description.
func TestPrism(t *testing.T) {
	base := startPrism(t)
	rec := &prismRecorder{}
	hc := &http.Client{Transport: rec}
	ctx := context.Background()

	// checkOne checks that exactly one request went out and Prism gave it
	// the wanted status; a 422 lists what broke the spec.
	checkOne := func(t *testing.T, method string, status int) prismExchange {
		t.Helper()
		ex := rec.take()
		if len(ex) != 1 {
			t.Fatalf("%d requests, want 1: %v", len(ex), ex)
		}
		if ex[0].Method != method || ex[0].Path != "/2010-04-01/Accounts/"+testSID+"/Messages.json" || ex[0].Status != status {
			t.Fatalf("got %v, want %s Messages.json answered %d", ex[0], method, status)
		}
		return ex[0]
	}

	sends := []struct {
		name string
		edit func(*sms.SenderConfig)
		want url.Values
	}{
		{"send from", nil, url.Values{
			"To": {clientNum}, "From": {practiceNum}, "Body": {clientText}, "StatusCallback": {callbackURL},
		}},
		{"send messaging service", func(c *sms.SenderConfig) { c.MessagingServiceSID = testService }, url.Values{
			"To": {clientNum}, "MessagingServiceSid": {testService}, "Body": {clientText}, "StatusCallback": {callbackURL},
		}},
	}
	for _, tt := range sends {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(t, base, func(c *sms.SenderConfig) {
				c.HTTPClient = hc
				if tt.edit != nil {
					tt.edit(c)
				}
			})
			id, err := s.Send(ctx, outbound())
			if err != nil {
				t.Fatalf("Send: %v (%v)", err, rec.take())
			}
			ex := checkOne(t, http.MethodPost, http.StatusCreated)
			if !strings.HasPrefix(string(id), "SM") {
				t.Errorf("id = %q, want Prism's example SID", id)
			}
			if ex.Form.Encode() != tt.want.Encode() {
				t.Errorf("posted %v, want %v", ex.Form, tt.want)
			}
		})
	}

	// Proof that Prism checks requests: one without To and Body is refused.
	t.Run("broken request refused", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, base+"/2010-04-01/Accounts/"+testSID+"/Messages.json",
			strings.NewReader(url.Values{"From": {practiceNum}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(testSID, testToken)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		ex := checkOne(t, http.MethodPost, http.StatusUnprocessableEntity)
		if !strings.Contains(ex.Body, "To") {
			t.Errorf("422 reasons do not name To: %s", ex.Body)
		}
	})

	t.Run("reconcile list", func(t *testing.T) {
		h, cp := &recHandler{}, &recCheckpoints{}
		r, err := sms.NewReconciler(sms.ReconcilerConfig{
			AccountSID: testSID,
			AuthToken:  testToken,
			Numbers:    []string{practiceNum},
			APIBase:    base,
			HTTPClient: hc,
			Limit:      2, // Prism's example links a next page for ever
		}, h, cp)
		if err != nil {
			t.Fatal(err)
		}
		n, err := r.Once(ctx)
		if err != nil {
			t.Fatalf("Once: %v (%v)", err, rec.take())
		}
		ex := checkOne(t, http.MethodGet, http.StatusOK)
		if got := ex.Query.Get("To"); got != practiceNum {
			t.Errorf("To = %q", got)
		}
		if got := ex.Query.Get("PageSize"); got != "2" {
			t.Errorf("PageSize = %q", got)
		}
		// Prism's example page: one outbound message, one inbound MMS.
		if n != 1 {
			t.Fatalf("Once handed %d, want 1", n)
		}
		const sid = "MMc26223853f8c46b4ab7dfaa6abba0a26"
		_, _, stored := h.snapshot()
		in, ok := stored[sid]
		if !ok {
			t.Fatalf("stored %v, want %s", stored, sid)
		}
		want := time.Date(2019, 5, 24, 17, 44, 49, 0, time.UTC)
		if in.Channel != envelope.SMS || in.Text != "look mom I have media!" || !in.ReceivedAt.Equal(want) ||
			len(in.Notes) != 1 || in.Notes[0] != "3 media attachments; see the Twilio console" {
			t.Errorf("inbound = %+v", in)
		}
		if got := cp.get(practiceNum); got != want.Format(time.RFC3339) {
			t.Errorf("checkpoint = %q, want %q", got, want.Format(time.RFC3339))
		}
	})
}
