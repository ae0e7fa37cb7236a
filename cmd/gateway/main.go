// Command gateway runs the therapist inbox gateway: it answers clients who
// text or email the practice, holds their messages for the therapist's
// check-ins, and pages the on-call clinician when a message sounds unsafe.
//
//	gateway serve   -config FILE   run the daemon
//	gateway check   -config FILE   validate the config, show check-ins and wording
//	gateway digest  -config FILE --now   run a check-in by hand
//	gateway audit   -config FILE [--with-text] CLIENT   a client's timeline
//	gateway demo                   play a short story through loopback stand-ins
//	gateway classify [--jsonl] [-config FILE] [--lexicon FILE]... [FILE...]   triage messages, one JSON verdict per line
//	gateway version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
)

// commands is the subcommand table (mox style): name → func.
var commands = map[string]func(ctx context.Context, args []string, stdout io.Writer) error{
	"serve":    cmdServe,
	"check":    cmdCheck,
	"digest":   cmdDigest,
	"demo":     cmdDemo,
	"version":  cmdVersion,
	"load":     cmdLoad,
	"classify": cmdClassify,
	"audit":    cmdAudit,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || commands[args[0]] == nil {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("usage: gateway <%s> [flags]: %w", strings.Join(names, "|"), flag.ErrHelp)
	}
	return commands[args[0]](ctx, args[1:], stdout)
}

// defaultConfigPath is where serve, check and digest look without -config.
const defaultConfigPath = "/etc/gateway/gateway.conf"

func configFlag(fs *flag.FlagSet) *string {
	def := defaultConfigPath
	if v := os.Getenv("GATEWAY_CONFIG"); v != "" {
		def = v
	}
	return fs.String("config", def, "configuration file (env GATEWAY_CONFIG)")
}

func cmdVersion(_ context.Context, args []string, stdout io.Writer) error {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v += " " + s.Value
			}
		}
	}
	fmt.Fprintln(stdout, "gateway", v)
	return nil
}

func cmdServe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	m := &Main{Config: cfg, Logger: newLogger(os.Stderr)}
	if err := m.Open(ctx); err != nil {
		return err
	}
	m.Start(ctx)
	m.Logger.Info("serving", "addr", m.Addr())
	<-ctx.Done()
	m.Logger.Info("shutting down")
	return m.Close()
}

func cmdDigest(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("digest", flag.ContinueOnError)
	path := configFlag(fs)
	now := fs.Bool("now", false, "run a check-in now and send its digest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*now {
		return fmt.Errorf("digest: say --now to run a check-in by hand: %w", flag.ErrHelp)
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	m := &Main{Config: cfg, Logger: newLogger(os.Stderr)}
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	id, sent, err := m.DigestNow(ctx)
	if err != nil {
		return err
	}
	switch {
	case id == 0:
		fmt.Fprintln(stdout, "nothing held and no failed deliveries: no digest sent")
	case sent:
		fmt.Fprintf(stdout, "digest %d accepted by the mail server\n", id)
	default:
		return fmt.Errorf("digest %d queued but not yet accepted by the mail server; serve will keep retrying it", id)
	}
	return nil
}
