package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/emersion/go-message/charset" // decode any charset when printing
	"github.com/emersion/go-message/mail"
	"github.com/therapistinbox/gateway/channels/email/mailtest"
	"github.com/therapistinbox/gateway/channels/sms/twiliotest"
	"github.com/therapistinbox/gateway/gateway"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// demoConfig is the embedded default the demo runs on; the {{...}} parts
// are filled with the loopback stand-ins' addresses.
//
//go:embed demo.conf
var demoConfig string

// The demo's fictional Twilio account (shaped like real credentials,
// which twilio-go insists on).
const (
	demoAccountSID = "AC0123456789abcdef0123456789abcdef"
	demoAuthToken  = "0123456789abcdef0123456789abcdef"
)

// demoConfigFor fills the embedded demo config with the stand-ins'
// addresses and the demo's fictional Twilio token.
func demoConfigFor(listen, smtpAddr, imapAddr, twilioURL, db string) (*Config, error) {
	text := strings.NewReplacer("{{LISTEN}}", listen, "{{SMTP}}", smtpAddr, "{{IMAP}}", imapAddr, "{{TWILIO}}", twilioURL,
		"{{DB}}", db, "{{SID}}", demoAccountSID).Replace(demoConfig)
	return ParseConfig(text, func(k string) string {
		if k == "GATEWAY_TWILIO_AUTH_TOKEN" {
			return demoAuthToken
		}
		return ""
	})
}

// demoStep is one message a client sends in the demo story.
type demoStep struct {
	note string
	in   envelope.Inbound
}

var demoStory = []demoStep{
	{"Alex texts after a hard session", envelope.Inbound{Channel: envelope.SMS, From: "(555) 010-0001",
		Text: "Hi, I had a rough night after Tuesday's session. Can we talk about it next time?"}},
	{"Alex texts again a minute later (same check-in window)", envelope.Inbound{Channel: envelope.SMS, From: "+15550100001",
		Text: "Also I forgot to mention the thing with my sister."}},
	{"Jordan, not on the client list yet, emails", envelope.Inbound{Channel: envelope.Email, From: "Jordan Lee <Jordan@Example.org>",
		FromName: "Jordan Lee", Subject: "Rescheduling", MessageID: "c1a2b3@mail.example.org",
		Text: "Hello, could we move next week's appointment to Thursday afternoon?\n\nThanks,\nJordan"}},
	{"Alex texts something that cannot wait", envelope.Inbound{Channel: envelope.SMS, From: "+15550100001",
		Text: "i cant keep myself safe tonight. been counting my pills"}},
	{"Dr. Okafor, on call, answers the page", envelope.Inbound{Channel: envelope.SMS, From: "+15550100900",
		Text: "ACK"}},
}

// cmdDemo runs the gateway on an embedded config against loopback
// stand-ins for Twilio and the mail server, plays a short story, and
// prints what each person received.
func cmdDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	verbose := fs.Bool("v", false, "print the gateway's log lines (ids only) on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "gateway-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	smtpSrv, err := mailtest.Start()
	if err != nil {
		return fmt.Errorf("demo: mail stand-in: %w", err)
	}
	defer smtpSrv.Close()
	twilio := twiliotest.Start(demoAccountSID)
	defer twilio.Close()
	mailbox, err := startDemoIMAP()
	if err != nil {
		return fmt.Errorf("demo: IMAP stand-in: %w", err)
	}
	defer mailbox.Close()

	listen, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	cfg, err := demoConfigFor(listen, smtpSrv.Addr, mailbox.addr, twilio.URL, filepath.Join(dir, "gateway.db"))
	if err != nil {
		return fmt.Errorf("demo: config: %w", err)
	}
	m := &Main{Config: cfg}
	if *verbose {
		m.Logger = newLogger(os.Stderr)
	}
	if err := m.Open(ctx); err != nil {
		return err
	}
	m.Start(ctx)
	defer m.Close()

	fmt.Fprintf(stdout, "Gateway demo: %s's practice, check-ins %s (%s).\n", cfg.Practice.Therapist,
		strings.Join(cfg.Checkins.Times, " and "), cfg.Practice.TimeZone)
	fmt.Fprintf(stdout, "Loopback stand-ins: Twilio API at %s, SMTP at %s, IMAP at %s.\n\n", twilio.URL, smtpSrv.Addr, mailbox.addr)
	for i, step := range demoStory {
		in := step.in
		in.ReceivedAt = time.Now()
		var err error
		if in.Channel == envelope.SMS {
			// Texts go the whole way: a signed webhook to our own server.
			in.ProviderID, err = postWebhook(ctx, cfg, i, in)
		} else {
			// Mail goes the whole way too: into the mailbox, where the
			// gateway's IMAP watcher sees it arrive.
			in.ProviderID, err = mailbox.deliver(in, cfg.Email.Address)
		}
		if err != nil {
			return err
		}
		action, err := demoOutcome(ctx, m, in)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d. %s: %s -> %s\n", i+1, step.note, quote(in.Text), describe(action))
	}

	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	// The ack and the urgent reply to Alex, the page, the ACK's confirmation.
	texts, err := twilio.Wait(wctx, 4)
	if err != nil {
		return fmt.Errorf("demo: waiting for texts: %w", err)
	}
	// The ack to Jordan and the on-call email.
	if _, err := smtpSrv.Wait(wctx, 2); err != nil {
		return fmt.Errorf("demo: waiting for mail: %w", err)
	}
	id, sent, err := m.DigestNow(wctx)
	if err != nil || !sent {
		return fmt.Errorf("demo: digest %d not sent: %v", id, err)
	}
	mails := smtpSrv.Messages()

	onCall := cfg.PracticeInfo().OnCall[0]
	section(stdout, "What the clients received")
	for _, t := range texts {
		if t.To != onCall.Phone {
			fmt.Fprintf(stdout, "\nSMS to %s from %s:\n%s\n", t.To, t.From, t.Body)
		}
	}
	for _, msg := range mails {
		if to := msg.To[0]; to != onCall.Email && to != cfg.Practice.DigestTo {
			printMail(stdout, msg)
		}
	}
	section(stdout, "What the on-call clinician received")
	for _, t := range texts {
		if t.To == onCall.Phone {
			fmt.Fprintf(stdout, "\nSMS to %s:\n%s\n", t.To, t.Body)
		}
	}
	for _, msg := range mails {
		if msg.To[0] == onCall.Email {
			printMail(stdout, msg)
		}
	}
	section(stdout, "What the therapist received at the check-in")
	for _, msg := range mails {
		if msg.To[0] == cfg.Practice.DigestTo {
			printMail(stdout, msg)
		}
	}
	return nil
}

// postWebhook sends in as Twilio would: a signed form post to the
// gateway's /twilio/sms. It returns the MessageSid it used.
func postWebhook(ctx context.Context, cfg *Config, i int, in envelope.Inbound) (envelope.ProviderID, error) {
	sid := fmt.Sprintf("SM%016x%016x", time.Now().UnixNano(), i)
	form := url.Values{"AccountSid": {cfg.SMS.AccountSID}, "MessageSid": {sid}, "From": {in.From},
		"To": {cfg.SMS.From}, "Body": {in.Text}, "NumMedia": {"0"}}
	u := strings.TrimRight(cfg.HTTP.PublicURL, "/") + "/twilio/sms"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twilioSignature(cfg.SMS.AuthToken, u, form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("demo: webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("demo: webhook answered %s", resp.Status)
	}
	return envelope.ProviderID(sid), nil
}

// demoOutcome waits for the gateway to file in (mail arrives through the
// watcher, so not at once) and returns what it decided.
func demoOutcome(ctx context.Context, m *Main, in envelope.Inbound) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := m.Store.Lookup(ctx, in.Channel, in.ProviderID)
		if err == nil {
			return res.Action, nil
		}
		if in.Channel == envelope.SMS && strings.EqualFold(strings.TrimSpace(in.Text), "ack") {
			// Staff messages are not client messages: no Lookup row.
			return "alert_ack", nil
		}
		if !errors.Is(err, gateway.ErrNotFound) || time.Now().After(deadline) {
			return "", fmt.Errorf("demo: message not filed: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeLoopbackAddr finds a free port on 127.0.0.1, so the demo knows its
// public URL (Twilio signs it) before the gateway listens.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func describe(action string) string {
	return map[string]string{
		"ack":        "held for the check-in; acknowledged",
		"ack_repeat": "held; brief acknowledgement",
		"quiet":      "held; no reply (already acknowledged in this check-in window)",
		"urgent":     "URGENT: on-call paged, crisis resources sent",
		"automated":  "held; automatic mail, not answered",
		"opt_out":    "opted out",
		"opt_in":     "opted back in",
		"help":       "help text sent",
		"alert_ack":  "alert acknowledged: nobody else will be paged",
	}[action]
}

func quote(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return `"` + s + `"`
}

func section(w io.Writer, title string) {
	fmt.Fprintf(w, "\n%s\n%s\n", title, strings.Repeat("=", len(title)))
}

// printMail shows a captured message's main headers and its text part.
func printMail(w io.Writer, msg mailtest.Message) {
	r, err := mail.CreateReader(bytes.NewReader(msg.Data))
	if err != nil {
		fmt.Fprintf(w, "\n(unreadable mail: %v)\n", err)
		return
	}
	subject, _ := r.Header.Subject()
	from, _ := r.Header.AddressList("From")
	fmt.Fprintf(w, "\nEmail to %s", strings.Join(msg.To, ", "))
	if len(from) > 0 {
		fmt.Fprintf(w, " from %s", from[0].String())
	}
	fmt.Fprintf(w, "\nSubject: %s\n", subject)
	if irt := r.Header.Get("In-Reply-To"); irt != "" {
		fmt.Fprintf(w, "In-Reply-To: %s\n", irt)
	}
	for {
		p, err := r.NextPart()
		if err != nil {
			break
		}
		if h, ok := p.Header.(*mail.InlineHeader); ok {
			if ct, _, _ := h.ContentType(); ct == "text/plain" {
				b, _ := io.ReadAll(p.Body)
				fmt.Fprintf(w, "\n%s\n", strings.TrimRight(string(b), "\n"))
				break
			}
		}
	}
}
