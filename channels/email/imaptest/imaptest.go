// Package imaptest runs a real Dovecot IMAP server on 127.0.0.1 for tests:
// its own configuration, certificate, users and maildirs in a temporary
// folder, a plaintext port (STARTTLS offered) and an implicit-TLS port.
// It installs Debian's Dovecot packages when they are missing.
package imaptest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/therapistinbox/gateway/channels/email/internal/mailpeer"
)

// nobody is the uid and gid Dovecot's mail processes run as.
const nobody = 65534

// startTimeout bounds how long Dovecot may take to open its ports.
const startTimeout = 10 * time.Second

// defaultCaps is Dovecot 2.3's own post-login capability list; WithoutCapability
// removes names from it.
const defaultCaps = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY " +
	"THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE " +
	"UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH " +
	"ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY " +
	"PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"

// Option configures a Server.
type Option func(*options)

type options struct {
	user, pass string
	without    []string
}

// WithUser sets the mailbox owner's login (default "test" / "test-pass").
func WithUser(user, pass string) Option {
	return func(o *options) { o.user, o.pass = user, pass }
}

// WithoutCapability makes the server stop advertising the named
// capabilities (e.g. "IDLE", "MOVE"), as an older or stricter server would.
func WithoutCapability(names ...string) Option {
	return func(o *options) { o.without = append(o.without, names...) }
}

// Server is a running Dovecot instance. Its methods may be called from
// several goroutines.
type Server struct {
	dir     string // the temporary folder holding everything
	conf    string // dovecot.conf
	log     string // dovecot.log
	addr    string
	tlsAddr string
	user    string
	pass    string
	roots   *x509.CertPool
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the master process has exited
}

// MessageState is what a test can check about a stored message.
type MessageState struct {
	UID       uint32
	Flags     []string // e.g. `\Seen`, `\Recent`
	Subject   string
	MessageID string // the Message-ID header as stored, with brackets
}

// Has reports whether the message carries flag (e.g. `\Seen`).
func (m MessageState) Has(flag string) bool {
	for _, f := range m.Flags {
		if strings.EqualFold(f, flag) {
			return true
		}
	}
	return false
}

// Start installs Dovecot if needed, starts it on free loopback ports and
// stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{user: "test", pass: "test-pass"}
	for _, f := range opts {
		f(&o)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("imaptest: Dovecot needs root (it runs mail processes as nobody)")
		}
		t.Skip("imaptest: Dovecot needs root (it runs mail processes as nobody)")
	}
	ensureDovecot(t)

	dir := t.TempDir()
	if err := mailpeer.ReachableByNobody(dir); err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	s := &Server{dir: dir, conf: filepath.Join(dir, "dovecot.conf"), log: filepath.Join(dir, "dovecot.log"), user: o.user, pass: o.pass}
	if err := s.prepare(o); err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	// base_dir holds unix sockets, whose paths must stay short; test temp
	// dirs can be long.
	run, err := os.MkdirTemp("", "imaptest-")
	if err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })

	// Free ports are picked by listening and closing; another process may
	// take one in between, so a failed start is retried with new ports.
	for attempt := 1; ; attempt++ {
		err := s.start(run, o)
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("imaptest: %v", err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

// Addr is the plaintext (STARTTLS-capable) listener, "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// TLSAddr is the implicit-TLS listener.
func (s *Server) TLSAddr() string { return s.tlsAddr }

// RootCAs trusts the server's self-signed certificate (valid for
// "localhost" and 127.0.0.1).
func (s *Server) RootCAs() *x509.CertPool { return s.roots }

// User is the mailbox owner's login name.
func (s *Server) User() string { return s.user }

// Pass is the mailbox owner's password.
func (s *Server) Pass() string { return s.pass }

// Conf is the path of the generated dovecot.conf, for ad-hoc doveadm calls.
func (s *Server) Conf() string { return s.conf }

// prepare writes the certificate, users file and mail root.
// ensureDovecot installs Dovecot when it is missing. Without apt (or root)
// it skips the test, unless CI is set: there a missing server is a failure.
func ensureDovecot(t testing.TB) {
	t.Helper()
	err := mailpeer.Install()
	if err == nil {
		return
	}
	if errors.Is(err, mailpeer.ErrNoApt) && os.Getenv("CI") == "" {
		t.Skipf("imaptest: Dovecot is not installed and %v", err)
	}
	t.Fatalf("imaptest: %v", err)
}

func (s *Server) prepare(o options) error {
	if strings.ContainsAny(o.user, ":\n ") || strings.ContainsAny(o.pass, ":\n ") || o.user == "" || o.pass == "" {
		return errors.New("user and password must be non-empty, without ':' or spaces")
	}
	roots, err := mailpeer.WriteCert(s.dir)
	if err != nil {
		return err
	}
	s.roots = roots
	mail := filepath.Join(s.dir, "mail")
	for _, d := range []string{mail, filepath.Join(s.dir, "lib")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chown(mail, nobody, nobody); err != nil {
		return err
	}
	users := filepath.Join(s.dir, "users")
	line := fmt.Sprintf("%s:{PLAIN}%s::::::\n", o.user, o.pass)
	if err := os.WriteFile(users, []byte(line), 0o640); err != nil {
		return err
	}
	// Dovecot's auth process runs as the dovecot user and reads this file.
	if g, err := user.LookupGroup("dovecot"); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		return os.Chown(users, -1, gid)
	}
	return os.Chmod(users, 0o644)
}

// start writes the configuration for two fresh ports and runs Dovecot in
// the foreground as a child process.
func (s *Server) start(run string, o options) error {
	addr, err := freePort()
	if err != nil {
		return err
	}
	tlsAddr, err := freePort()
	if err != nil {
		return err
	}
	s.addr, s.tlsAddr = addr, tlsAddr
	if err := os.WriteFile(s.conf, []byte(s.config(run, o)), 0o644); err != nil {
		return err
	}
	s.cmd = exec.Command("dovecot", "-F", "-c", s.conf)
	out, err := os.Create(filepath.Join(s.dir, "dovecot.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	s.cmd.Stdout, s.cmd.Stderr = out, out
	// Its own process group, so stop can kill every Dovecot process at
	// once; and it goes down with the test binary even when that is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start dovecot: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()

	deadline := time.Now().Add(startTimeout)
	for _, a := range []string{s.addr, s.tlsAddr} {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-s.exited:
				return fmt.Errorf("dovecot exited before %s answered:\n%s", a, s.logTail())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				s.stop()
				return fmt.Errorf("dovecot did not answer on %s within %v:\n%s", a, startTimeout, s.logTail())
			}
		}
	}
	return nil
}

// stop ends the whole process group. Dovecot's master takes over a second
// to shut down gracefully, so it gets a moment to reap its children (no
// zombies left behind) and is then killed.
func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pgid := -s.cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(150 * time.Millisecond):
	}
	syscall.Kill(pgid, syscall.SIGKILL)
	<-s.exited
}

func (s *Server) logTail() string {
	var b []byte
	for _, f := range []string{s.log, filepath.Join(s.dir, "dovecot.out")} {
		data, _ := os.ReadFile(f)
		b = append(b, data...)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

func (s *Server) config(run string, o options) string {
	caps := defaultCaps
	if len(o.without) > 0 {
		var keep []string
		for _, c := range strings.Fields(defaultCaps) {
			drop := false
			for _, w := range o.without {
				drop = drop || strings.EqualFold(c, w)
			}
			if !drop {
				keep = append(keep, c)
			}
		}
		caps = strings.Join(keep, " ")
	}
	_, port, _ := net.SplitHostPort(s.addr)
	_, tlsPort, _ := net.SplitHostPort(s.tlsAddr)
	dh := ""
	if _, err := os.Stat("/usr/share/dovecot/dh.pem"); err == nil {
		dh = "ssl_dh = </usr/share/dovecot/dh.pem"
	}
	return fmt.Sprintf(`# Generated by imaptest.
instance_name = %[1]s
base_dir = %[2]s
state_dir = %[3]s/lib
listen = 127.0.0.1
protocols = imap
shutdown_clients = yes
log_path = %[3]s/dovecot.log
info_log_path = %[3]s/dovecot.log

# Tests try bad passwords: no delay, no per-IP penalty.
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

ssl = yes
ssl_cert = <%[3]s/cert.pem
ssl_key = <%[3]s/key.pem
%[4]s
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
imap_capability = %[5]s

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[3]s/users
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[3]s/users
  override_fields = uid=%[8]d gid=%[8]d home=%[3]s/mail/%%u
}
mail_location = maildir:~/Maildir

namespace inbox {
  inbox = yes
  separator = /
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[6]s
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[7]s
    ssl = yes
  }
}
`, filepath.Base(run), run, s.dir, dh, caps, port, tlsPort, nobody)
}

// Deliver stores raw in mailbox (created if missing) as new incoming mail,
// the way a local delivery agent would; IDLE clients are told at once.
func (s *Server) Deliver(t testing.TB, mailbox string, raw []byte) {
	t.Helper()
	if mailbox == "" {
		mailbox = "INBOX"
	}
	if mailbox != "INBOX" {
		s.createMailbox(mailbox)
	}
	if _, err := s.doveadmIn(raw, "save", "-u", s.user, "-m", mailbox); err != nil {
		t.Fatalf("imaptest: deliver: %v", err)
	}
}

// Append stores many messages in mailbox (created if missing) through one
// IMAP connection, much faster than Deliver for a backlog.
func (s *Server) Append(t testing.TB, mailbox string, raws ...[]byte) {
	t.Helper()
	c, err := s.Dial()
	if err != nil {
		t.Fatalf("imaptest: append: %v", err)
	}
	defer c.Close()
	if mailbox != "INBOX" {
		s.createMailbox(mailbox)
	}
	// Pipelined: send every APPEND, then collect the answers.
	cmds := make([]*imapclient.AppendCommand, 0, len(raws))
	for _, raw := range raws {
		cmd := c.Append(mailbox, int64(len(raw)), nil)
		if _, err := cmd.Write(raw); err != nil {
			t.Fatalf("imaptest: append: %v", err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatalf("imaptest: append: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if _, err := cmd.Wait(); err != nil {
			t.Fatalf("imaptest: append: %v", err)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("imaptest: append: logout: %v", err)
	}
}

// Dial returns a client logged in over the plaintext port.
func (s *Server) Dial() (*imapclient.Client, error) {
	c, err := imapclient.DialInsecure(s.addr, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Login(s.user, s.pass).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Kick drops every logged-in IMAP connection of the user (the server says
// BYE and closes). It reports whether there was one to drop.
func (s *Server) Kick(t testing.TB) bool {
	t.Helper()
	out, err := s.doveadm("kick", s.user)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 68 { // EX_NOUSER: nobody connected
		return false
	}
	if err != nil {
		t.Fatalf("imaptest: kick: %v: %s", err, out)
	}
	return true
}

// UIDValidity returns mailbox's current UIDVALIDITY.
func (s *Server) UIDValidity(t testing.TB, mailbox string) uint32 {
	t.Helper()
	out, err := s.doveadm("-f", "json", "mailbox", "status", "-u", s.user, "uidvalidity", mailbox)
	if err != nil {
		t.Fatalf("imaptest: mailbox status: %v", err)
	}
	var st []struct {
		UIDValidity string `json:"uidvalidity"`
	}
	if err := json.Unmarshal(out, &st); err != nil || len(st) != 1 {
		t.Fatalf("imaptest: mailbox status: unexpected output %q", out)
	}
	v, err := strconv.ParseUint(st[0].UIDValidity, 10, 32)
	if err != nil {
		t.Fatalf("imaptest: mailbox status: %v", err)
	}
	return uint32(v)
}

// ResetUIDValidity gives mailbox a new UIDVALIDITY, keeping its messages,
// as a server restore or migration would. It returns the new value.
func (s *Server) ResetUIDValidity(t testing.TB, mailbox string) uint32 {
	t.Helper()
	next := s.UIDValidity(t, mailbox) + 1
	if next == 0 {
		next = 1
	}
	if out, err := s.doveadm("mailbox", "update", "-u", s.user, "--uid-validity", strconv.FormatUint(uint64(next), 10), mailbox); err != nil {
		t.Fatalf("imaptest: mailbox update: %v: %s", err, out)
	}
	if got := s.UIDValidity(t, mailbox); got != next {
		t.Fatalf("imaptest: UIDVALIDITY is %d after setting %d", got, next)
	}
	return next
}

// Fetch lists the messages in mailbox in UID order (none when the mailbox
// does not exist).
func (s *Server) Fetch(t testing.TB, mailbox string) []MessageState {
	t.Helper()
	out, err := s.doveadm("-f", "json", "fetch", "-u", s.user, "uid flags hdr.subject hdr.message-id", "mailbox", mailbox)
	if err != nil {
		t.Fatalf("imaptest: fetch: %v: %s", err, out)
	}
	var rows []map[string]string
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("imaptest: fetch: %v in %q", err, out)
	}
	msgs := make([]MessageState, 0, len(rows))
	for _, r := range rows {
		uid, err := strconv.ParseUint(r["uid"], 10, 32)
		if err != nil {
			t.Fatalf("imaptest: fetch: uid %q: %v", r["uid"], err)
		}
		msgs = append(msgs, MessageState{
			UID:       uint32(uid),
			Flags:     strings.Fields(r["flags"]),
			Subject:   r["hdr.subject"],
			MessageID: strings.TrimSpace(r["hdr.message-id"]),
		})
	}
	return msgs
}

// Doveadm runs doveadm against this instance and returns its output.
func (s *Server) Doveadm(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := s.doveadm(args...)
	if err != nil {
		t.Fatalf("imaptest: doveadm %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *Server) createMailbox(name string) {
	s.doveadm("mailbox", "create", "-u", s.user, name) // fails harmlessly when it exists
}

func (s *Server) doveadm(args ...string) ([]byte, error) { return s.doveadmIn(nil, args...) }

func (s *Server) doveadmIn(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("doveadm", append([]string{"-c", s.conf}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("doveadm %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// TLSConfig returns a client configuration that trusts the server.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}
