package imaptest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// aptLock serialises installs across test binaries. The submission test
// harness takes the same lock and installs the same package list, so two
// packages' tests running at once never race dpkg.
const aptLock = "/tmp/gateway-apt.lock"

// aptPackages is the full list both mail harnesses install in one call:
// whichever runs first installs everything the other needs too.
var aptPackages = []string{"postfix", "dovecot-core", "dovecot-imapd", "dovecot-submissiond", "openssl"}

// postfixPreseed keeps the postfix package (wanted only for smtp-sink)
// from configuring or starting a system MTA.
const postfixPreseed = "postfix postfix/main_mailer_type select No configuration\n" +
	"postfix postfix/mailname string localhost\n"

// errNoApt means the machine cannot install packages here (no apt-get, or
// not root).
var errNoApt = errors.New("cannot install Debian packages")

var (
	installOnce sync.Once
	installErr  error
)

// ensureDovecot installs Dovecot when it is missing. Without apt (or root)
// it skips the test, unless CI is set: there a missing server is a failure.
func ensureDovecot(t testing.TB) {
	t.Helper()
	installOnce.Do(func() { installErr = install() })
	if installErr == nil {
		return
	}
	if errors.Is(installErr, errNoApt) && os.Getenv("CI") == "" {
		t.Skipf("imaptest: Dovecot is not installed and %v", installErr)
	}
	t.Fatalf("imaptest: %v", installErr)
}

// installed reports whether the Dovecot binaries the harness runs exist.
func installed() bool {
	for _, bin := range []string{"dovecot", "doveadm"} {
		if _, err := exec.LookPath(bin); err != nil {
			return false
		}
	}
	_, err := os.Stat("/usr/lib/dovecot/imap") // from dovecot-imapd
	return err == nil
}

func install() error {
	if installed() {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%w: apt-get not found", errNoApt)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", errNoApt)
	}
	f, err := os.OpenFile(aptLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("install: open lock: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("install: lock %s: %w", aptLock, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if installed() { // another test binary did it while we waited
		return nil
	}

	hadPostfix := pkgInstalled("postfix")
	if !hadPostfix {
		cmd := exec.Command("debconf-set-selections")
		cmd.Stdin = strings.NewReader(postfixPreseed)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("install: debconf-set-selections: %w: %s", err, out)
		}
	}
	// policy-rc.d stops package scripts from starting system daemons that
	// would listen on every interface (dovecot on 143/993, postfix on 25).
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
			return fmt.Errorf("install: write %s: %w", policy, err)
		}
		defer os.Remove(policy)
	}

	out, err := aptGet(append([]string{"-y", "-o", "Dpkg::Use-Pty=0", "install", "--no-install-recommends"}, aptPackages...)...)
	if err != nil && missingLists(out) {
		if out, err := aptGet("update"); err != nil {
			return fmt.Errorf("install: apt-get update: %w\n%s", err, tail(out))
		}
		out, err = aptGet(append([]string{"-y", "-o", "Dpkg::Use-Pty=0", "install", "--no-install-recommends"}, aptPackages...)...)
	}
	if err != nil {
		return fmt.Errorf("install: apt-get install %s: %w\n%s", strings.Join(aptPackages, " "), err, tail(out))
	}
	if !hadPostfix {
		stopPostfix()
	}
	if !installed() {
		return errors.New("install: apt-get succeeded but dovecot is still missing")
	}
	return nil
}

func aptGet(args ...string) ([]byte, error) {
	cmd := exec.Command("apt-get", append([]string{"-q", "-o", "DPkg::Lock::Timeout=600"}, args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}

// missingLists reports whether apt failed because it has no (or stale)
// package lists, which "apt-get update" fixes.
func missingLists(out []byte) bool {
	for _, s := range []string{"Unable to locate package", "has no installation candidate", "Failed to fetch", "404"} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}

func pkgInstalled(name string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", name).Output()
	return err == nil && bytes.Contains(out, []byte("install ok installed"))
}

// stopPostfix stops a postfix master the package may have started despite
// policy-rc.d; the tests only need its smtp-sink tool.
func stopPostfix() {
	if exec.Command("postfix", "status").Run() == nil {
		exec.Command("postfix", "stop").Run()
	}
}

func tail(out []byte) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
