package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/therapistinbox/gateway/gateway"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// clientID is how a client is named by number on the command line: "12",
// "#12" or "id:12". Longer runs of digits are read as phone numbers.
var clientID = regexp.MustCompile(`^(?:#|id:)?(\d{1,6})$`)

// cmdAudit prints one client's timeline: each message received, held,
// acknowledged, put in a digest and delivered, each alert, and each reply
// relayed to them with who sent it and how it was delivered. What anyone
// wrote is shown only with --with-text.
//
//	gateway audit [-config FILE] [--with-text] CLIENT
//
// CLIENT is a client id, a phone number (read in practice.phone_region)
// or an email address.
func cmdAudit(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	path := configFlag(fs)
	withText := fs.Bool("with-text", false, "also print what clients and staff wrote (health information: take care where it goes)")
	// Flags may come before or after CLIENT.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != 1 {
		return fmt.Errorf("usage: gateway audit [-config FILE] [--with-text] CLIENT (an id, phone number or email address): %w", flag.ErrHelp)
	}
	cfg, err := auditConfig(*path)
	if err != nil {
		return err
	}
	// Open would create a missing file: a mistyped path must not look like
	// an empty practice.
	if _, err := os.Stat(cfg.Store.Path); err != nil {
		return fmt.Errorf("audit: store.path: %w", err)
	}
	store, err := gateway.Open(ctx, cfg.Store.Path)
	if err != nil {
		return err
	}
	defer store.Close()
	id, err := findClient(ctx, store, rest[0], cfg.Practice.PhoneRegion)
	if err != nil {
		return err
	}
	evs, err := store.Timeline(ctx, id, *withText)
	if errors.Is(err, gateway.ErrNotFound) {
		return fmt.Errorf("audit: there is no client %d", id)
	}
	if err != nil {
		return err
	}
	loc := cfg.Location()
	fmt.Fprintf(stdout, "client %d: %d events, times in %s\n", id, len(evs), loc)
	for _, e := range evs {
		fmt.Fprintf(stdout, "%s  %-15s  %s\n", e.At.In(loc).Format("2006-01-02 15:04:05 MST"), e.What, e.Detail)
		if e.Text != "" {
			for _, line := range strings.Split(strings.TrimRight(e.Text, "\n"), "\n") {
				fmt.Fprintf(stdout, "%27s| %s\n", "", line)
			}
		}
	}
	return nil
}

// auditConfig reads what the audit needs from the config file (the
// database, time zone and phone region) without validating the rest, so
// it runs from a shell that lacks the daemon's secrets.
func auditConfig(path string) (*Config, error) {
	c := Defaults()
	if _, err := toml.DecodeFile(path, &c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if v := os.Getenv("GATEWAY_DB"); v != "" {
		c.Store.Path = v
	}
	if c.Store.Path == "" {
		return nil, errors.New("store.path: is empty; write where the database lives")
	}
	return &c, nil
}

// findClient reads arg as a client id, an email address or a phone
// number. Errors do not repeat the address.
func findClient(ctx context.Context, s *gateway.Store, arg, region string) (int64, error) {
	arg = strings.TrimSpace(arg)
	if m := clientID.FindStringSubmatch(arg); m != nil {
		return strconv.ParseInt(m[1], 10, 64)
	}
	var ch envelope.Channel
	var addr string
	if strings.Contains(arg, "@") {
		a, err := gateway.NormalizeEmail(arg)
		if err != nil {
			return 0, fmt.Errorf("audit: %w", err)
		}
		ch, addr = envelope.Email, string(a)
	} else {
		p, err := gateway.NormalizePhone(arg, region)
		if err != nil {
			return 0, fmt.Errorf("audit: CLIENT is not an id, email address or phone number: %w", err)
		}
		ch, addr = envelope.SMS, string(p)
	}
	id, err := s.FindClient(ctx, ch, addr)
	if errors.Is(err, gateway.ErrNotFound) {
		return 0, fmt.Errorf("audit: no client is filed under that %s", map[envelope.Channel]string{envelope.SMS: "phone number", envelope.Email: "email address"}[ch])
	}
	return id, err
}
