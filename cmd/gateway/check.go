package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/therapistinbox/gateway/policies"
)

// cmdCheck validates the config and shows what it means: the next
// check-ins and every acknowledgement as a client would read it.
func cmdCheck(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	return printCheck(stdout, cfg, time.Now())
}

func printCheck(w io.Writer, cfg *Config, now time.Time) error {
	cal, err := cfg.Calendar()
	if err != nil {
		return err
	}
	wording, err := policies.NewWording(cfg.wordingOverrides())
	if err != nil {
		return err
	}
	loc := cfg.Location()
	fmt.Fprintf(w, "config OK\n\nsecrets: twilio auth token %s, smtp password %s, imap password %s, admin token %s\n",
		redacted(cfg.SMS.AuthToken), redacted(cfg.Email.SMTP.Password), redacted(cfg.Email.IMAP.Password), redacted(cfg.HTTP.AdminToken))
	fmt.Fprintf(w, "\nnext check-ins (%s):\n", loc)
	next := cal.Upcoming(now, 3)
	for _, t := range next {
		fmt.Fprintf(w, "  %s  (%s)\n", t.In(loc).Format("Mon 2 Jan 2006 15:04 MST"), policies.SpokenTime(t.In(loc), now.In(loc)))
	}
	var nextAt time.Time
	if len(next) > 0 {
		nextAt = next[0]
	}
	p := policies.Placeholders{
		FirstName: "Alex", NextCheckin: policies.SpokenTime(nextAt.In(loc), now.In(loc)),
		Therapist: cfg.Practice.Therapist, Practice: cfg.Practice.Name, CrisisLine: cfg.Practice.CrisisLine,
		Emergency: cfg.Practice.Emergency, UrgentKeyword: cfg.Practice.UrgentKeyword, OnCallTold: len(cfg.OnCall) > 0,
	}
	kinds := []policies.AckKind{policies.AckFirst, policies.AckRepeat, policies.AckUrgent, policies.AckUnknown, policies.AckHelp}
	for _, ch := range []string{"sms", "email"} {
		for _, k := range kinds {
			text, err := wording.Render(ch, k, p)
			if err != nil {
				return fmt.Errorf("wording.%s.%s: %w", ch, k, err)
			}
			fmt.Fprintf(w, "\n--- %s %s ---\n%s\n", ch, k, text)
			if ch != "sms" {
				continue
			}
			if n, enc := policies.Segments(text); n > maxAckSegments {
				fmt.Fprintf(w, "warning: wording.sms.%s is %d SMS segments (%s); keep texts to %d: shorten it%s\n",
					k, n, enc, maxAckSegments, ucs2Hint(enc))
			}
		}
	}
	return nil
}

// maxAckSegments is the most SMS segments an acknowledgement should take
// (CARE.md: short beats complete on SMS).
const maxAckSegments = 2

func ucs2Hint(encoding string) string {
	if encoding == policies.EncodingUCS2 {
		return ", and replace curly quotes, dashes and emoji, which switch the whole text to UCS-2 (70 characters a segment)"
	}
	return ""
}

func redacted(s string) string {
	if s == "" {
		return "<not set>"
	}
	return "<redacted>"
}
