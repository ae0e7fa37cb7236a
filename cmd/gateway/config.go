package main

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // zones load in minimal containers too

	"github.com/BurntSushi/toml"
	"github.com/therapistinbox/gateway/channels/email"
	"github.com/therapistinbox/gateway/gateway"
	"github.com/therapistinbox/gateway/policies"
	"github.com/therapistinbox/gateway/schedule"
)

// Config is the gateway's configuration file. Every key is documented in
// deploy/gateway.conf.example.
type Config struct {
	Practice PracticeConfig           `toml:"practice"`
	Checkins CheckinConfig            `toml:"checkins"`
	Acks     AckConfig                `toml:"acks"`
	Wording  map[string]WordingConfig `toml:"wording"`
	Triage   TriageConfig             `toml:"triage"`
	Clients  []ClientConfig           `toml:"clients"`
	OnCall   []OnCallConfig           `toml:"oncall"`
	Escalate EscalationConfig         `toml:"escalation"`
	Store    StoreConfig              `toml:"store"`
	HTTP     HTTPConfig               `toml:"http"`
	Outbox   OutboxConfig             `toml:"outbox"`
	SMS      SMSConfig                `toml:"sms"`
	Email    EmailConfig              `toml:"email"`
}

// PracticeConfig describes the therapist and practice.
type PracticeConfig struct {
	Name          string `toml:"name"`
	Therapist     string `toml:"therapist"`
	TimeZone      string `toml:"time_zone"`
	DigestTo      string `toml:"digest_to"`
	PhoneRegion   string `toml:"phone_region"`
	CrisisLine    string `toml:"crisis_line"`
	Emergency     string `toml:"emergency"`
	UrgentKeyword string `toml:"urgent_keyword"`
	// TherapistPhone is paged (with everyone) when nobody in the on-call
	// chain acknowledges, and told when a digest did not go out.
	TherapistPhone string `toml:"therapist_phone"`
	// Replies from the digest: how long a reply address works, the longest
	// text relayed by SMS, and whether on-call staff may relay by SMS.
	RelayTTL         time.Duration `toml:"relay_ttl"`
	RelayMaxSegments int           `toml:"relay_max_segments"`
	SMSRelay         bool          `toml:"sms_relay"`
}

// CheckinConfig lists when the therapist reads messages.
type CheckinConfig struct {
	Times     []string     `toml:"times"`
	SendEmpty bool         `toml:"send_empty"`
	Away      []AwayConfig `toml:"away"`
}

// AwayConfig is a holiday: check-ins from From up to, not including, Until
// are skipped. Dates are in the practice's time zone.
type AwayConfig struct {
	From  string `toml:"from"`
	Until string `toml:"until"`
}

// AckConfig is the quiet period.
type AckConfig struct {
	Repeat     string        `toml:"repeat"`      // "none" or "brief"
	BriefAfter time.Duration `toml:"brief_after"` // least time between a client's acknowledgements
}

// WordingConfig overrides the acknowledgement texts of one channel.
type WordingConfig struct {
	First   string `toml:"first"`
	Repeat  string `toml:"repeat"`
	Urgent  string `toml:"urgent"`
	Unknown string `toml:"unknown"`
	Help    string `toml:"help"`
}

// TriageConfig extends the built-in safety lexicon.
type TriageConfig struct {
	Extra        map[string][]string `toml:"extra"`         // category → extra phrases
	LexiconFiles []string            `toml:"lexicon_files"` // extra lexicon files, read at start-up
}

// NewTriage reads the extra lexicon files and builds the safety triage
// from them, [triage.extra] and the practice's urgent keyword. A problem
// in a lexicon file is reported under its key with the file's line.
func (c *Config) NewTriage() (*policies.Triage, error) {
	var errs []error
	var lexicons [][]byte
	var names []string
	for i, path := range c.Triage.LexiconFiles {
		key := fmt.Sprintf("triage.lexicon_files[%d]", i)
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v; point it at a readable lexicon file (the format is described at the top of the built-in lexicon, policies/lexicon.txt)", key, err))
			continue
		}
		lexicons = append(lexicons, b)
		names = append(names, fmt.Sprintf("%s (%s)", key, path))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	t, err := policies.NewTriage(c.Practice.UrgentKeyword, c.Triage.Extra, lexicons...)
	if err == nil {
		return t, nil
	}
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	for _, e := range all {
		var le *policies.LexiconError
		switch {
		case errors.As(e, &le) && le.Lexicon > 0 && le.Line > 0:
			errs = append(errs, fmt.Errorf("%s line %d: %s", names[le.Lexicon-1], le.Line, le.Msg))
		case errors.As(e, &le) && le.Lexicon > 0:
			errs = append(errs, fmt.Errorf("%s: %s", names[le.Lexicon-1], le.Msg))
		default:
			errs = append(errs, fmt.Errorf("triage.extra: %w", e))
		}
	}
	return nil, errors.Join(errs...)
}

// ClientConfig is one known client: their first name and how they reach
// the practice.
type ClientConfig struct {
	FirstName string `toml:"first_name"`
	Phone     string `toml:"phone"`
	Email     string `toml:"email"`
}

// OnCallConfig is one person in the on-call chain, in order.
type OnCallConfig struct {
	Name          string        `toml:"name"`
	Phone         string        `toml:"phone"`
	Email         string        `toml:"email"`
	EscalateAfter time.Duration `toml:"escalate_after"`
}

// EscalationConfig is what happens when nobody acknowledges an alert.
type EscalationConfig struct {
	RepeatEvery   time.Duration `toml:"repeat_every"`   // everyone is paged again this often after the last person
	RotationStart string        `toml:"rotation_start"` // "2026-11-16 09:00": oncall[0]'s first week as primary; "" = no rotation
	DigestGrace   time.Duration `toml:"digest_grace"`   // how late a digest may be before staff are texted
	AckKey        string        `toml:"ack_key"`        // signs acknowledgement links; generated and kept in the database when empty
	AckKeyFile    string        `toml:"ack_key_file"`
}

// rotationLayout is how escalation.rotation_start is written.
const rotationLayout = "2006-01-02 15:04"

// StoreConfig is the database.
type StoreConfig struct {
	Path          string `toml:"path"`
	RetentionDays int    `toml:"retention_days"`
}

// HTTPConfig is the listener for webhooks, health and metrics.
type HTTPConfig struct {
	Listen         string `toml:"listen"`
	PublicURL      string `toml:"public_url"`
	AdminToken     string `toml:"admin_token"`
	AdminTokenFile string `toml:"admin_token_file"`
}

// OutboxConfig tunes delivery.
type OutboxConfig struct {
	Concurrency int           `toml:"concurrency"`
	MaxAttempts int           `toml:"max_attempts"`
	BaseDelay   time.Duration `toml:"base_delay"`
	MaxDelay    time.Duration `toml:"max_delay"`
}

// SMSConfig is the Twilio channel.
type SMSConfig struct {
	Enabled             bool   `toml:"enabled"`
	AccountSID          string `toml:"account_sid"`
	AuthToken           string `toml:"auth_token"`
	AuthTokenFile       string `toml:"auth_token_file"`
	From                string `toml:"from"`
	MessagingServiceSID string `toml:"messaging_service_sid"`
	// Numbers lists the practice numbers whose inbound messages are
	// reconciled (default: From); give every number of a Messaging
	// Service pool.
	Numbers        []string      `toml:"numbers"`
	ReconcileEvery time.Duration `toml:"reconcile_every"`
	APIBase        string        `toml:"api_base"` // loopback stand-ins only
}

// EmailConfig is the mail channel.
type EmailConfig struct {
	Enabled  bool       `toml:"enabled"`
	Address  string     `toml:"address"`
	FromName string     `toml:"from_name"`
	SMTP     MailServer `toml:"smtp"`
	IMAP     MailServer `toml:"imap"`
	Mailbox  string     `toml:"mailbox"`
	// MoveTo is where processed client mail is moved; when empty it stays
	// in Mailbox, flagged \Seen.
	MoveTo    string        `toml:"move_to"`
	PollEvery time.Duration `toml:"poll_every"`  // for servers without IDLE
	MaxSizeMB int           `toml:"max_size_mb"` // larger mail is recorded from its header only
}

// MailServer is how to reach an IMAP or SMTP server.
type MailServer struct {
	Addr         string `toml:"addr"`
	Security     string `toml:"security"` // "tls", "starttls" or "none"
	AllowPlain   bool   `toml:"allow_plain"`
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
}

// Defaults returns the configuration every file is read on top of.
func Defaults() Config {
	return Config{
		Practice: PracticeConfig{
			TimeZone: "America/New_York", PhoneRegion: "US",
			CrisisLine: "988 (call or text)", Emergency: "911", UrgentKeyword: "URGENT",
			RelayTTL: gateway.DefaultRelayTTL, RelayMaxSegments: gateway.DefaultRelayMaxSegments,
		},
		Acks:   AckConfig{Repeat: "brief", BriefAfter: 4 * time.Hour},
		Store:  StoreConfig{Path: "/var/lib/gateway/gateway.db", RetentionDays: 90},
		HTTP:   HTTPConfig{Listen: "127.0.0.1:8080"},
		Outbox: OutboxConfig{Concurrency: gateway.DefaultConcurrency, MaxAttempts: gateway.DefaultMaxAttempts},
		Escalate: EscalationConfig{
			RepeatEvery: gateway.DefaultRepeatEvery, DigestGrace: gateway.DefaultDigestGrace,
		},
		Email: EmailConfig{Mailbox: "INBOX", PollEvery: email.DefaultPoll, MaxSizeMB: 10},
	}
}

// secretEnv names the environment variables that supply secrets, and
// envOverrides the deployment values the environment may override.
var secretEnv = map[string]string{
	"sms.auth_token":      "GATEWAY_TWILIO_AUTH_TOKEN",
	"email.smtp.password": "GATEWAY_SMTP_PASSWORD",
	"email.imap.password": "GATEWAY_IMAP_PASSWORD",
	"http.admin_token":    "GATEWAY_ADMIN_TOKEN",
	"escalation.ack_key":  "GATEWAY_ACK_KEY",
}

// LoadConfig reads the file at path on top of Defaults, applies the
// environment, and validates the result.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(string(b), os.Getenv)
}

// ParseConfig is LoadConfig on a file's text, with getenv for the
// environment.
func ParseConfig(text string, getenv func(string) string) (*Config, error) {
	c := Defaults()
	md, err := toml.Decode(text, &c)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, fmt.Errorf("%s: unknown key; check its spelling against deploy/gateway.conf.example", k))
	}
	if v := getenv("GATEWAY_DB"); v != "" {
		c.Store.Path = v
	}
	if v := getenv("GATEWAY_LISTEN"); v != "" {
		c.HTTP.Listen = v
	}
	errs = append(errs, c.readSecrets(getenv)...)
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

// readSecrets fills secrets from the environment or their *_file paths.
func (c *Config) readSecrets(getenv func(string) string) []error {
	var errs []error
	fill := func(key string, val *string, file string) {
		if v := getenv(secretEnv[key]); v != "" {
			*val = v
		}
		if file == "" {
			return
		}
		if *val != "" {
			errs = append(errs, fmt.Errorf("%s: set both directly (or with %s) and through %s_file; keep one", key, secretEnv[key], key))
			return
		}
		b, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_file: %v; point it at a readable file holding the secret", key, err))
			return
		}
		*val = strings.TrimSpace(string(b))
	}
	fill("sms.auth_token", &c.SMS.AuthToken, c.SMS.AuthTokenFile)
	fill("email.smtp.password", &c.Email.SMTP.Password, c.Email.SMTP.PasswordFile)
	fill("email.imap.password", &c.Email.IMAP.Password, c.Email.IMAP.PasswordFile)
	fill("http.admin_token", &c.HTTP.AdminToken, c.HTTP.AdminTokenFile)
	fill("escalation.ack_key", &c.Escalate.AckKey, c.Escalate.AckKeyFile)
	return errs
}

var (
	sidPattern   = regexp.MustCompile(`^AC[0-9a-f]{32}$`)
	msgSvcSID    = regexp.MustCompile(`^MG[0-9a-f]{32}$`)
	tokenPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// Validate checks every value and returns all problems at once, each naming
// its key and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	p := c.Practice
	if strings.TrimSpace(p.Therapist) == "" {
		bad("practice.therapist", "is empty; write the name clients know, e.g. \"Dr. Maria Rivera\"")
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil || p.TimeZone == "" {
		bad("practice.time_zone", "%q is not a time zone; write an IANA name such as \"America/New_York\"", p.TimeZone)
		loc = time.UTC
	}
	if _, err := mail.ParseAddress(p.DigestTo); err != nil {
		bad("practice.digest_to", "%q is not an email address; write where the therapist reads the digest", p.DigestTo)
	}
	if _, err := gateway.NormalizePhone("+12125550100", p.PhoneRegion); err != nil || len(p.PhoneRegion) != 2 {
		bad("practice.phone_region", "%q is not a region; write a two-letter code such as \"US\"", p.PhoneRegion)
	}
	if strings.TrimSpace(p.CrisisLine) == "" {
		bad("practice.crisis_line", "is empty; write the crisis line clients can use, e.g. \"988 (call or text)\"")
	}
	if strings.TrimSpace(p.Emergency) == "" {
		bad("practice.emergency", "is empty; write the emergency number, e.g. \"911\"")
	}
	if !regexp.MustCompile(`^[A-Za-z]{3,20}$`).MatchString(p.UrgentKeyword) {
		bad("practice.urgent_keyword", "%q must be one word of 3 to 20 letters, e.g. \"URGENT\"", p.UrgentKeyword)
	}

	if len(c.Checkins.Times) == 0 {
		bad("checkins.times", "is empty; list at least one check-in, e.g. [\"Mon 09:00\", \"Wed 10:00\"]")
	}
	for i, t := range c.Checkins.Times {
		if _, err := schedule.ParseSlot(t); err != nil {
			bad(fmt.Sprintf("checkins.times[%d]", i), "%v", err)
		}
	}
	for i, a := range c.Checkins.Away {
		if _, err := c.away(a, loc); err != nil {
			bad(fmt.Sprintf("checkins.away[%d]", i), "%v", err)
		}
	}

	switch c.Acks.Repeat {
	case "none", "brief":
	default:
		bad("acks.repeat", "%q is not a choice; write \"none\" (silence for repeats) or \"brief\" (a short note)", c.Acks.Repeat)
	}
	if c.Acks.BriefAfter < 0 {
		bad("acks.brief_after", "is negative; write a duration such as \"4h\"")
	}
	if _, err := policies.NewWording(c.wordingOverrides()); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.NewTriage(); err != nil {
		errs = append(errs, err)
	}

	for i, cl := range c.Clients {
		key := fmt.Sprintf("clients[%d]", i)
		if cl.Phone == "" && cl.Email == "" {
			bad(key, "has neither phone nor email; give at least one")
		}
		if cl.Phone != "" {
			if _, err := gateway.NormalizePhone(cl.Phone, p.PhoneRegion); err != nil {
				bad(key+".phone", "%v; write it in E.164 form, e.g. \"+15550100001\"", err)
			}
		}
		if cl.Email != "" {
			if _, err := gateway.NormalizeEmail(cl.Email); err != nil {
				bad(key+".email", "is not an email address; write it like \"name@example.org\"")
			}
		}
	}
	if len(c.OnCall) == 0 {
		bad("oncall", "is empty; add at least one [[oncall]] person with a phone or email, or urgent messages reach nobody")
	}
	for i, o := range c.OnCall {
		key := fmt.Sprintf("oncall[%d]", i)
		if strings.TrimSpace(o.Name) == "" {
			bad(key+".name", "is empty; write who this is")
		}
		if o.Phone == "" && o.Email == "" {
			bad(key, "has neither phone nor email; give at least one")
		}
		if o.Phone != "" {
			if _, err := gateway.NormalizePhone(o.Phone, p.PhoneRegion); err != nil {
				bad(key+".phone", "%v; write it in E.164 form, e.g. \"+15550100900\"", err)
			}
		}
		if o.Email != "" {
			if _, err := mail.ParseAddress(o.Email); err != nil {
				bad(key+".email", "is not an email address")
			}
		}
		if o.EscalateAfter < 0 || (o.EscalateAfter > 0 && o.EscalateAfter < time.Minute) {
			bad(key+".escalate_after", "%v is too short; write at least \"1m\" (default \"10m\")", o.EscalateAfter)
		}
	}
	if p.TherapistPhone != "" {
		if _, err := gateway.NormalizePhone(p.TherapistPhone, p.PhoneRegion); err != nil {
			bad("practice.therapist_phone", "%v; write it in E.164 form, e.g. \"+15550100800\"", err)
		}
	}
	if p.RelayTTL < time.Hour {
		bad("practice.relay_ttl", "%v is too short; write how long a digest's reply addresses work, at least \"1h\" (default \"336h\", 14 days)", p.RelayTTL)
	}
	if p.RelayMaxSegments < 1 || p.RelayMaxSegments > 10 {
		bad("practice.relay_max_segments", "is %d; write 1 to 10 (default 10): longer replies to texting clients are refused with an explanation", p.RelayMaxSegments)
	}
	if p.SMSRelay && !c.SMS.Enabled {
		bad("practice.sms_relay", "needs sms.enabled = true; turn SMS on or set sms_relay = false")
	}
	e := c.Escalate
	if e.RepeatEvery < time.Minute {
		bad("escalation.repeat_every", "%v is too short; write at least \"1m\" (default \"10m\")", e.RepeatEvery)
	}
	if e.DigestGrace < 10*time.Minute {
		bad("escalation.digest_grace", "%v is too short; write at least \"10m\" (default \"2h\")", e.DigestGrace)
	}
	if e.RotationStart != "" {
		if _, err := time.ParseInLocation(rotationLayout, e.RotationStart, loc); err != nil {
			bad("escalation.rotation_start", "%q is not a local date and time; write it like \"2026-11-16 09:00\", or leave it empty for no rotation", e.RotationStart)
		}
	}
	if e.AckKey != "" && len(e.AckKey) < 32 {
		bad("escalation.ack_key", "is %d characters; write at least 32 random characters (e.g. openssl rand -hex 32), or leave it empty to have one generated", len(e.AckKey))
	}

	if c.Store.Path == "" {
		bad("store.path", "is empty; write where the database lives, e.g. \"/var/lib/gateway/gateway.db\"")
	}
	if c.Store.RetentionDays < 1 {
		bad("store.retention_days", "is %d; write how many days delivered messages are kept, at least 1", c.Store.RetentionDays)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		bad("http.listen", "%q is not host:port; write e.g. \"127.0.0.1:8080\"", c.HTTP.Listen)
	}
	if c.HTTP.PublicURL != "" {
		if u, err := url.Parse(c.HTTP.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("http.public_url", "%q is not a URL; write the address Twilio reaches, e.g. \"https://gateway.example.org\"", c.HTTP.PublicURL)
		}
	}
	if c.Outbox.Concurrency < 1 || c.Outbox.Concurrency > 64 {
		bad("outbox.concurrency", "is %d; write a number from 1 to 64", c.Outbox.Concurrency)
	}
	if c.Outbox.MaxAttempts < 1 {
		bad("outbox.max_attempts", "is %d; write at least 1", c.Outbox.MaxAttempts)
	}

	if c.SMS.Enabled {
		if !sidPattern.MatchString(c.SMS.AccountSID) {
			bad("sms.account_sid", "must be \"AC\" and 32 hex digits, as shown in the Twilio console")
		}
		if !tokenPattern.MatchString(c.SMS.AuthToken) {
			bad("sms.auth_token", "must be 32 hex digits; set it with %s or sms.auth_token_file", secretEnv["sms.auth_token"])
		}
		if c.SMS.From == "" && c.SMS.MessagingServiceSID == "" {
			bad("sms.from", "is empty; write the practice number in E.164 form, or set sms.messaging_service_sid")
		}
		if c.SMS.From != "" {
			if _, err := gateway.NormalizePhone(c.SMS.From, "US"); err != nil || !strings.HasPrefix(c.SMS.From, "+") {
				bad("sms.from", "%q is not an E.164 number; write it like \"+15550100000\"", c.SMS.From)
			}
		}
		if c.SMS.MessagingServiceSID != "" && !msgSvcSID.MatchString(c.SMS.MessagingServiceSID) {
			bad("sms.messaging_service_sid", "must be \"MG\" and 32 hex digits")
		}
		if c.HTTP.PublicURL == "" {
			bad("http.public_url", "is empty; Twilio signs webhooks with it: write the public https address of this gateway")
		}
		if c.SMS.MessagingServiceSID != "" && c.SMS.From == "" && len(c.SMS.Numbers) == 0 {
			bad("sms.numbers", "is empty; list the Messaging Service's numbers so messages missed while down are found")
		}
		for i, n := range c.SMS.Numbers {
			if _, err := gateway.NormalizePhone(n, "US"); err != nil || !strings.HasPrefix(n, "+") {
				bad(fmt.Sprintf("sms.numbers[%d]", i), "%q is not an E.164 number; write it like \"+15550100000\"", n)
			}
		}
		if c.SMS.ReconcileEvery < 0 || (c.SMS.ReconcileEvery > 0 && c.SMS.ReconcileEvery < time.Minute) {
			bad("sms.reconcile_every", "%v is too often; write at least \"1m\" (default \"5m\")", c.SMS.ReconcileEvery)
		}
	}
	if c.Email.Enabled || c.Practice.DigestTo != "" {
		if _, err := mail.ParseAddress(c.Email.Address); err != nil {
			bad("email.address", "%q is not an email address; write the practice address clients write to", c.Email.Address)
		}
		checkServer := func(key string, s MailServer) {
			if _, _, err := net.SplitHostPort(s.Addr); err != nil {
				bad(key+".addr", "%q is not host:port; write e.g. \"mail.example.org:465\"", s.Addr)
			}
			switch s.Security {
			case "tls", "starttls":
			case "none":
				if h, _, _ := net.SplitHostPort(s.Addr); !isLoopback(h) && !s.AllowPlain {
					bad(key+".security", "\"none\" sends passwords and mail in clear; use \"tls\" or \"starttls\" (plain is for loopback only, unless %s.allow_plain = true)", key)
				}
			default:
				bad(key+".security", "%q is not a choice; write \"tls\", \"starttls\" or \"none\"", s.Security)
			}
			if s.Username != "" && s.Password == "" {
				bad(key+".password", "is empty while %s.username is set; set it with %s or %s.password_file", key, secretEnv[key+".password"], key)
			}
		}
		checkServer("email.smtp", c.Email.SMTP)
		if c.Email.Enabled {
			checkServer("email.imap", c.Email.IMAP)
			if strings.TrimSpace(c.Email.Mailbox) == "" {
				bad("email.mailbox", "is empty; write the folder clients' mail arrives in, usually \"INBOX\"")
			}
			if c.Email.MoveTo != "" && strings.EqualFold(c.Email.MoveTo, c.Email.Mailbox) {
				bad("email.move_to", "is the watched mailbox itself; name another folder, e.g. \"Gateway\", or leave it empty to flag mail \\Seen")
			}
			if c.Email.PollEvery < 10*time.Second {
				bad("email.poll_every", "%v is too often; write at least \"10s\" (default \"1m\")", c.Email.PollEvery)
			}
			if c.Email.MaxSizeMB < 1 || c.Email.MaxSizeMB > 100 {
				bad("email.max_size_mb", "is %d; write a size from 1 to 100 (default 10)", c.Email.MaxSizeMB)
			}
		}
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// away turns an away period's dates into times in loc.
func (c *Config) away(a AwayConfig, loc *time.Location) (schedule.Away, error) {
	from, err := time.ParseInLocation("2006-01-02", a.From, loc)
	if err != nil {
		return schedule.Away{}, fmt.Errorf("from %q is not a date; write it like \"2026-12-24\"", a.From)
	}
	until, err := time.ParseInLocation("2006-01-02", a.Until, loc)
	if err != nil {
		return schedule.Away{}, fmt.Errorf("until %q is not a date; write the first day back, like \"2027-01-04\"", a.Until)
	}
	if !until.After(from) {
		return schedule.Away{}, fmt.Errorf("until %s is not after from %s; until is the first day back", a.Until, a.From)
	}
	return schedule.Away{From: from, Until: until}, nil
}

// wordingOverrides is the configured wording in the shape policies takes.
func (c *Config) wordingOverrides() map[string]map[policies.AckKind]string {
	out := map[string]map[policies.AckKind]string{}
	for ch, w := range c.Wording {
		m := map[policies.AckKind]string{}
		for k, v := range map[policies.AckKind]string{
			policies.AckFirst: w.First, policies.AckRepeat: w.Repeat, policies.AckUrgent: w.Urgent,
			policies.AckUnknown: w.Unknown, policies.AckHelp: w.Help,
		} {
			if v != "" {
				m[k] = v
			}
		}
		out[ch] = m
	}
	return out
}

// Location is the practice's time zone (valid after Validate).
func (c *Config) Location() *time.Location {
	loc, err := time.LoadLocation(c.Practice.TimeZone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Calendar builds the check-in calendar.
func (c *Config) Calendar() (*schedule.Calendar, error) {
	loc := c.Location()
	var away []schedule.Away
	for _, a := range c.Checkins.Away {
		w, err := c.away(a, loc)
		if err != nil {
			return nil, err
		}
		away = append(away, w)
	}
	return schedule.New(loc, c.Checkins.Times, away)
}

// Practice builds what the gateway needs to know about the practice.
func (c *Config) PracticeInfo() gateway.Practice {
	p := gateway.Practice{
		Name: c.Practice.Name, Therapist: c.Practice.Therapist, DigestTo: c.Practice.DigestTo,
		Location: c.Location(), CrisisLine: c.Practice.CrisisLine, Emergency: c.Practice.Emergency,
		UrgentKeyword: c.Practice.UrgentKeyword, PhoneRegion: c.Practice.PhoneRegion,
		EmptyDigest: c.Checkins.SendEmpty,
		RepeatEvery: c.Escalate.RepeatEvery, DigestGrace: c.Escalate.DigestGrace,
		AckURL:  strings.TrimRight(c.HTTP.PublicURL, "/"),
		Address: strings.ToLower(c.Email.Address), RelayTTL: c.Practice.RelayTTL,
		RelayMaxSegments: c.Practice.RelayMaxSegments, SMSRelay: c.Practice.SMSRelay,
	}
	if c.Practice.TherapistPhone != "" {
		n, _ := gateway.NormalizePhone(c.Practice.TherapistPhone, c.Practice.PhoneRegion)
		p.TherapistPhone = string(n)
	}
	if c.Escalate.AckKey != "" {
		p.AckKey = []byte(c.Escalate.AckKey)
	}
	if start, err := time.ParseInLocation(rotationLayout, c.Escalate.RotationStart, p.Location); err == nil {
		p.Rotation = &gateway.Rotation{Start: start}
	}
	for _, o := range c.OnCall {
		after := o.EscalateAfter
		if after == 0 {
			after = 10 * time.Minute
		}
		ph := ""
		if o.Phone != "" {
			n, _ := gateway.NormalizePhone(o.Phone, c.Practice.PhoneRegion)
			ph = string(n)
		}
		p.OnCall = append(p.OnCall, gateway.OnCall{Name: o.Name, Phone: ph, Email: strings.ToLower(o.Email), After: after})
	}
	return p
}
