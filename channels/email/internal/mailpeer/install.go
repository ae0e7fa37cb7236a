// Package mailpeer is what the Dovecot test harnesses (imaptest and
// submissiontest) share: installing the Debian packages once, under a lock
// held across test binaries, and the files a server started as root and
// running as nobody needs.
package mailpeer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// packages is the Debian package list both Dovecot harnesses need,
// installed in full in one apt-get call.
var packages = []string{"postfix", "dovecot-core", "dovecot-imapd", "dovecot-submissiond", "openssl"}

// debconf answers that keep postfix from configuring or running a system
// MTA: only its smtp-sink tool is wanted.
const postfixPreseed = "postfix postfix/main_mailer_type select No configuration\n" +
	"postfix postfix/mailname string localhost\n"

const (
	aptLockFile    = "/tmp/gateway-apt.lock" // held across test binaries
	aptLockTimeout = 15 * time.Minute
	aptLockWait    = "600" // seconds apt waits for dpkg's own lock
)

// ErrNoApt means the packages are missing and cannot be installed here (no
// apt-get, or not root).
var ErrNoApt = errors.New("mailpeer: postfix/dovecot missing and apt-get unavailable (need root on Debian)")

var (
	installOnce sync.Once
	installErr  error
)

// Install installs the packages when any is missing, once per process;
// concurrent test binaries are serialised by a file lock.
func Install() error {
	installOnce.Do(func() { installErr = install() })
	return installErr
}

func missingPackages() []string {
	var missing []string
	for _, p := range packages {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	return missing
}

func install() error {
	if len(missingPackages()) == 0 {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		return ErrNoApt
	}
	unlock, err := lockFile(aptLockFile, aptLockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	// Another process may have installed them while we waited.
	if len(missingPackages()) == 0 {
		return nil
	}

	if err := run(nil, strings.NewReader(postfixPreseed), "debconf-set-selections"); err != nil {
		return fmt.Errorf("mailpeer: preseed postfix: %w", err)
	}
	// Packages must not start their daemons (Dovecot on 143/993, Postfix on
	// 25): policy-rc.d answering 101 forbids it, unless the machine already
	// has a policy of its own.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
			return fmt.Errorf("mailpeer: write %s: %w", policy, err)
		}
		defer os.Remove(policy)
	}

	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	args := append([]string{"-q", "-y", "-o", "DPkg::Lock::Timeout=" + aptLockWait, "-o", "Dpkg::Use-Pty=0",
		"install", "--no-install-recommends"}, packages...)
	err = run(env, nil, "apt-get", args...)
	if err != nil && needsLists(err) {
		// A fresh image has no package lists: fetch them, then try again.
		if uerr := run(env, nil, "apt-get", "-q", "-o", "DPkg::Lock::Timeout="+aptLockWait, "update"); uerr != nil {
			return fmt.Errorf("mailpeer: apt-get update: %w (after install failed: %v)", uerr, err)
		}
		err = run(env, nil, "apt-get", args...)
	}
	if err != nil {
		return fmt.Errorf("mailpeer: apt-get install: %w", err)
	}
	stopSystemPostfix()
	if m := missingPackages(); len(m) > 0 {
		return fmt.Errorf("mailpeer: still missing after apt-get install: %s", strings.Join(m, " "))
	}
	return nil
}

// needsLists reports whether apt-get failed for lack of package lists
// (a fresh image, or lists older than the archive).
func needsLists(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Unable to locate package") ||
		strings.Contains(s, "no installation candidate") ||
		strings.Contains(s, "404") // stale lists name files the mirror dropped
}

// stopSystemPostfix stops a system Postfix the package may have started
// (no policy-rc.d of ours, e.g. a machine with its own); only smtp-sink is
// needed. With "No configuration" there is normally nothing to stop.
func stopSystemPostfix() {
	if _, err := os.Stat("/etc/postfix/main.cf"); err != nil {
		return
	}
	if exec.Command("postfix", "status").Run() == nil {
		_ = exec.Command("postfix", "stop").Run()
	}
}

// run runs a command and returns its error with the tail of its output.
func run(env []string, stdin *strings.Reader, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = env
	}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, tail(out.Bytes(), 2000))
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// lockFile takes an exclusive flock on path, polling until timeout.
func lockFile(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("mailpeer: open %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("mailpeer: lock %s: %w", path, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
