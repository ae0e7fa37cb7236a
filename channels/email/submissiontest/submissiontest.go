// Package submissiontest runs a real SMTP submission server on loopback for
// tests: Dovecot submission (STARTTLS and implicit TLS, AUTH PLAIN and
// LOGIN) relaying every accepted message to Postfix's smtp-sink, which
// writes each one to a file in the test's temporary directory.
//
// Start installs the Debian packages it needs when they are missing (as
// root, with apt-get), then starts both servers in well under a second.
package submissiontest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/channels/email/internal/mailpeer"
)

// Timing limits.
const (
	startTimeout = 30 * time.Second // for a port to answer after launch
	stopTimeout  = 5 * time.Second  // for a killed daemon to be reaped
	startTries   = 3                // launches when a picked port was taken meanwhile
)

// nobody is the uid/gid smtp-sink and Dovecot's mail processes run as.
const nobody = 65534

// Option changes how Start sets the server up.
type Option func(*options)

type options struct {
	user, pass string
	mechs      []string
	soft, hard reject
}

type reject struct {
	reply    string
	commands []string
}

// WithUser sets the one account the server accepts (default "gateway" with
// a random password). The password may not contain ':' or white space.
func WithUser(user, pass string) Option {
	return func(o *options) { o.user, o.pass = user, pass }
}

// WithAuthMechanisms sets the SASL mechanisms Dovecot offers, e.g.
// WithAuthMechanisms("login") for a server without PLAIN. The default is
// "plain", "login".
func WithAuthMechanisms(mechs ...string) Option {
	return func(o *options) { o.mechs = mechs }
}

// WithReject makes the sink answer the given SMTP commands ("MAIL", "RCPT",
// "DATA", "." for the end of data) with reply, e.g. "451 4.3.0 try later"
// or "550 5.1.1 no such user". Dovecot passes code, enhanced code and text
// on to the client (prefixing the recipient to RCPT replies), except 421,
// which it turns into its own 421 "Lost connection to relay server". There
// is one 4xx reply and one 5xx reply at most; a later WithReject of the
// same class replaces the earlier one.
func WithReject(reply string, commands ...string) Option {
	return func(o *options) {
		r := reject{reply: reply, commands: commands}
		if strings.HasPrefix(reply, "4") {
			o.soft = r
		} else {
			o.hard = r
		}
	}
}

// Server is a running Dovecot submission server with its smtp-sink.
type Server struct {
	id       string // in the greetings, to tell our servers from others on a reused port
	dir      string // state: config, cert, users, logs, captured messages
	msgs     string // smtp-sink's capture directory
	user     string
	pass     string
	addr     string
	tlsAddr  string
	sinkAddr string
	roots    *x509.CertPool
	procs    []*process // smtp-sink, dovecot
}

// Start starts a server for the test and stops it when the test ends. It
// installs the packages first if needed; when that is impossible (no
// apt-get, not root) it skips the test, or fails it when $CI is set.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	err := mailpeer.Install()
	if err == nil && os.Geteuid() != 0 {
		err = errNotRoot
	}
	if (errors.Is(err, mailpeer.ErrNoApt) || errors.Is(err, errNotRoot)) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	o := options{user: "gateway", pass: randomHex(12), mechs: []string{"plain", "login"}}
	for _, opt := range opts {
		opt(&o)
	}
	if !validCredential(o.user) || !validCredential(o.pass) {
		t.Fatalf("submissiontest: user and password must be non-empty, without ':' or white space")
	}
	for _, r := range []reject{o.soft, o.hard} {
		if r.reply != "" && (len(r.commands) == 0 || !validReply(r.reply)) {
			t.Fatalf("submissiontest: WithReject(%q, %q): want a 4xx or 5xx reply and at least one command", r.reply, r.commands)
		}
	}

	s := &Server{id: randomHex(6), dir: t.TempDir(), user: o.user, pass: o.pass}
	s.msgs = filepath.Join(s.dir, "messages")
	if err := s.prepare(); err != nil {
		t.Fatal(err)
	}
	for try := 1; ; try++ {
		err := s.launch(t, o)
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || try == startTries {
			t.Fatal(err)
		}
	}
}

// Addr is the submission port (STARTTLS, AUTH required), "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// TLSAddr is the implicit-TLS submission port (RFC 8314), "127.0.0.1:port".
func (s *Server) TLSAddr() string { return s.tlsAddr }

// SinkAddr is smtp-sink itself: plain SMTP, no AUTH, no TLS. Mail sent here
// is captured the same way.
func (s *Server) SinkAddr() string { return s.sinkAddr }

// RootCAs trusts the server's self-signed certificate (for localhost,
// 127.0.0.1 and ::1).
func (s *Server) RootCAs() *x509.CertPool { return s.roots }

// User is the account's user name.
func (s *Server) User() string { return s.user }

// Pass is the account's password.
func (s *Server) Pass() string { return s.pass }

// Dir is the server's state directory (config, logs, captured files).
func (s *Server) Dir() string { return s.dir }

// Log returns Dovecot's log so far. A login names its SASL mechanism:
// "Login: user=<gateway>, method=PLAIN, ...". Dovecot's log process writes
// a moment after the event; WaitLog waits for a line.
func (s *Server) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "dovecot.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// WaitLog waits until Dovecot's log contains substr and returns the log.
// It fails the test after timeout.
func (s *Server) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := s.Log(t)
		if strings.Contains(log, substr) {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("submissiontest: Dovecot logged no %q within %v:\n%s", substr, timeout, log)
		}
		time.Sleep(waitPoll)
	}
}

var (
	errPortTaken = errors.New("submissiontest: port taken")
	errNotRoot   = errors.New("submissiontest: must run as root (Dovecot and smtp-sink start as root and drop privileges)")
)

// prepare writes everything that does not depend on the ports.
func (s *Server) prepare() error {
	if err := mailpeer.ReachableByNobody(s.dir); err != nil {
		return err
	}
	for _, d := range []string{"lib", "home", "messages", "tls"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o755); err != nil {
			return fmt.Errorf("submissiontest: %w", err)
		}
	}
	for _, d := range []string{"home", "messages"} {
		if err := os.Chown(filepath.Join(s.dir, d), nobody, nobody); err != nil {
			return fmt.Errorf("submissiontest: %w", err)
		}
	}
	roots, err := mailpeer.WriteCert(filepath.Join(s.dir, "tls"))
	if err != nil {
		return err
	}
	s.roots = roots

	// Dovecot's auth process (user dovecot) reads the passwd-file.
	users := filepath.Join(s.dir, "users")
	line := fmt.Sprintf("%s:{PLAIN}%s::::::\n", s.user, s.pass)
	if err := os.WriteFile(users, []byte(line), 0o640); err != nil {
		return fmt.Errorf("submissiontest: %w", err)
	}
	if g, err := user.LookupGroup("dovecot"); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(users, 0, gid); err != nil {
			return fmt.Errorf("submissiontest: %w", err)
		}
	}
	return nil
}

// launch picks ports, writes the config and starts smtp-sink and Dovecot.
func (s *Server) launch(t testing.TB, o options) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	s.tlsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	s.sinkAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))

	sink, err := sinkPath()
	if err != nil {
		return err
	}
	// -a: no AUTH (its AUTH answers 250, which real clients reject);
	// -C -F: no XCLIENT/XFORWARD; -u: drop root after binding; -d: one
	// file per message, written before the final 250.
	args := []string{"-a", "-C", "-F", "-u", "nobody", "-h", "sink-" + s.id + ".localhost",
		"-d", filepath.Join(s.msgs, "%Y%m%dT%H%M%S.")}
	if r := o.soft; r.reply != "" {
		args = append(args, "-r", strings.Join(r.commands, ","), "-b", r.reply)
	}
	if r := o.hard; r.reply != "" {
		args = append(args, "-f", strings.Join(r.commands, ","), "-B", r.reply)
	}
	args = append(args, s.sinkAddr, "128")
	sinkLog := filepath.Join(s.dir, "smtp-sink.log")
	sp, err := startProcess(t, sinkLog, sink, args...)
	if err != nil {
		return err
	}
	if err := sp.waitPort(s.sinkAddr, s.checkGreeting, sinkLog); err != nil {
		sp.stop()
		return err
	}

	// Dovecot's unix sockets need a short path (about 100 bytes at most),
	// and test temp dirs can be long.
	run, err := os.MkdirTemp("", "subm-")
	if err != nil {
		sp.stop()
		return fmt.Errorf("submissiontest: %w", err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	if err := os.Chmod(run, 0o755); err != nil { // Dovecot wants it world-readable
		sp.stop()
		return fmt.Errorf("submissiontest: %w", err)
	}
	conf := filepath.Join(s.dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(s.config(run, o.mechs)), 0o644); err != nil {
		sp.stop()
		return fmt.Errorf("submissiontest: %w", err)
	}
	dlog, dout := filepath.Join(s.dir, "dovecot.log"), filepath.Join(s.dir, "dovecot.out")
	dp, err := startProcess(t, dout, "dovecot", "-F", "-c", conf)
	if err != nil {
		sp.stop()
		return err
	}
	for _, w := range []struct {
		addr  string
		check func(net.Conn) error
	}{{s.addr, s.checkGreeting}, {s.tlsAddr, s.checkTLSGreeting}} {
		if err := dp.waitPort(w.addr, w.check, dout, dlog); err != nil {
			dp.stop()
			sp.stop()
			return err
		}
	}
	s.procs = []*process{sp, dp}
	return nil
}

// config is the Dovecot configuration: submission only, users from the
// passwd-file, relaying to the sink.
func (s *Server) config(run string, mechs []string) string {
	_, port, _ := net.SplitHostPort(s.addr)
	_, tlsPort, _ := net.SplitHostPort(s.tlsAddr)
	_, sinkPort, _ := net.SplitHostPort(s.sinkAddr)
	dhLine := ""
	if _, err := os.Stat("/usr/share/dovecot/dh.pem"); err == nil {
		dhLine = "ssl_dh = </usr/share/dovecot/dh.pem"
	}
	return fmt.Sprintf(`# Written by submissiontest; one instance per test.
instance_name = submissiontest-%[1]s
base_dir = %[2]s
state_dir = %[3]s/lib
listen = 127.0.0.1
protocols = submission
hostname = localhost
login_greeting = submissiontest %[10]s ready
shutdown_clients = yes

log_path = %[3]s/dovecot.log
info_log_path = %[3]s/dovecot.log
auth_verbose = yes
# Tests try bad passwords: no failure delay, and no per-IP auth penalty
# (the auth process can't reach anvil's socket).
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

ssl = yes
ssl_cert = <%[3]s/tls/cert.pem
ssl_key = <%[3]s/tls/key.pem
%[4]s
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = %[5]s

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[3]s/users
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[3]s/users
  override_fields = uid=%[6]d gid=%[6]d home=%[3]s/home/%%u
}
mail_location = maildir:~/Maildir

submission_relay_host = 127.0.0.1
submission_relay_port = %[7]s
submission_relay_ssl = no

service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = %[8]s
  }
  inet_listener submissions {
    address = 127.0.0.1
    port = %[9]s
    ssl = yes
  }
}
`, filepath.Base(run), run, s.dir, dhLine, strings.Join(mechs, " "), nobody, sinkPort, port, tlsPort, s.id)
}

// process is a daemon started by the harness, in its own process group.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	addrs  []string // where it was seen listening; stop waits until they refuse
}

func startProcess(t testing.TB, logFile, name string, args ...string) (*process, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("submissiontest: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group, so stop reaches Dovecot's children. Pdeathsig
	// takes Dovecot down with a test binary killed by go test -timeout
	// (smtp-sink loses it when it drops root: best effort).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("submissiontest: start %s: %w", name, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	return p, nil
}

// stop kills the process and everything it forked (its process group).
// Dovecot's master takes one to six seconds to shut down on SIGTERM, and
// nothing it would tidy outlives the test's directories. Safe to call twice.
func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.After(stopTimeout)
	select {
	case <-p.exited:
	case <-deadline:
		return
	}
	// Children die a moment after the master is reaped, and until then
	// their inherited listening sockets still take connections.
	for _, a := range p.addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				break
			}
			c.Close()
			select {
			case <-deadline:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// waitPort waits until addr greets as ours (check), failing early when the
// process exits. A port that another process took between freePorts and
// our bind gives errPortTaken. Errors quote the end of the log files.
func (p *process) waitPort(addr string, check func(net.Conn) error, logFiles ...string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetDeadline(deadline)
			err = check(c)
			c.Close()
			if err == nil {
				p.addrs = append(p.addrs, addr)
				return nil
			}
			if errors.Is(err, errPortTaken) {
				return fmt.Errorf("%w: %s: %v", errPortTaken, addr, err)
			}
		}
		select {
		case <-p.exited:
			var log []byte
			for _, f := range logFiles {
				log = append(log, logTail(f)...)
			}
			if bytes.Contains(log, []byte("in use")) {
				return fmt.Errorf("%w: %s", errPortTaken, addr)
			}
			return fmt.Errorf("submissiontest: %s exited before %s answered; log:\n%s", filepath.Base(p.cmd.Path), addr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("submissiontest: %s did not answer within %v (%v)", addr, startTimeout, err)
		}
	}
}

// checkGreeting reads the SMTP greeting and checks it names this server.
func (s *Server) checkGreeting(c net.Conn) error {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err // not up yet
	}
	if !strings.HasPrefix(line, "220 ") || !strings.Contains(line, s.id) {
		return fmt.Errorf("%w: greeting %q", errPortTaken, strings.TrimSpace(line))
	}
	return nil
}

// checkTLSGreeting checks the certificate, which is this server's own,
// then the greeting.
func (s *Server) checkTLSGreeting(c net.Conn) error {
	tc := tls.Client(c, &tls.Config{RootCAs: s.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return fmt.Errorf("%w: %v", errPortTaken, err)
		}
		return err
	}
	return s.checkGreeting(tc)
}

func logTail(path string) []byte {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return b
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("submissiontest: find a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// sinkPath finds smtp-sink: on PATH, or where Debian's postfix puts it.
func sinkPath() (string, error) {
	if p, err := exec.LookPath("smtp-sink"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink", "/usr/libexec/postfix/smtp-sink"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("submissiontest: smtp-sink not found (Debian package postfix)")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validReply reports whether reply looks like "451 4.3.0 text".
func validReply(reply string) bool {
	return len(reply) > 4 && (reply[0] == '4' || reply[0] == '5') &&
		'0' <= reply[1] && reply[1] <= '9' && '0' <= reply[2] && reply[2] <= '9' && reply[3] == ' '
}

func validCredential(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ':' || r <= ' ' || r == 0x7f
	})
}
