package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/therapistinbox/gateway/policies"
)

// examplePath is the annotated example every deployment starts from.
const examplePath = "../../deploy/gateway.conf.example"

// Fictional secrets, distinct from each other so a leak names its source.
const (
	confTwilioToken = "5ec2e7a0b1c2d3e4f5a6b7c8d9e0f1a2"
	confSMTPPass    = "smtp-pass-Vq8r2LmZ"
	confIMAPPass    = "imap-pass-Kt3w9XcB"
	confAdminToken  = "admin-token-Hn4s7PdQ"
)

// confEnv returns a getenv that knows only kv (name, value, ...), so the
// caller's environment cannot leak into a test.
func confEnv(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// confSecretsEnv supplies all four secrets, as systemd or a container would.
var confSecretsEnv = confEnv(
	"GATEWAY_TWILIO_AUTH_TOKEN", confTwilioToken,
	"GATEWAY_SMTP_PASSWORD", confSMTPPass,
	"GATEWAY_IMAP_PASSWORD", confIMAPPass,
	"GATEWAY_ADMIN_TOKEN", confAdminToken,
)

func readExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustParse parses text and fails the test on any error.
func mustParse(t *testing.T, text string, getenv func(string) string) *Config {
	t.Helper()
	cfg, err := ParseConfig(text, getenv)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return cfg
}

// errorLines parses text, which must fail, and returns the error's lines.
func errorLines(t *testing.T, text string, getenv func(string) string) []string {
	t.Helper()
	_, err := ParseConfig(text, getenv)
	if err == nil {
		t.Fatal("ParseConfig: no error")
	}
	return strings.Split(err.Error(), "\n")
}

// lineFor returns the first error line that starts with key + ":".
func lineFor(lines []string, key string) (string, bool) {
	for _, l := range lines {
		if strings.HasPrefix(l, key+":") {
			return l, true
		}
	}
	return "", false
}

// demoText is the embedded demo config with its placeholders filled the
// way cmdDemo fills them.
func demoText(t *testing.T) string {
	t.Helper()
	return strings.NewReplacer("{{LISTEN}}", "127.0.0.1:8080", "{{SMTP}}", "127.0.0.1:2525", "{{IMAP}}", "127.0.0.1:1143", "{{TWILIO}}", "http://127.0.0.1:4010",
		"{{DB}}", filepath.Join(t.TempDir(), "gateway.db"), "{{SID}}", demoAccountSID).Replace(demoConfig)
}

// validConfig is a small valid config the table tests change: each {name}
// is replaced by confText's field of that name.
const validConfig = `
[practice]
therapist = "Dr. Maria Rivera"
digest_to = "maria.rivera@example.org"

[checkins]
times = ["Mon 09:00"]

[[oncall]]
name = "Dr. Sam Okafor"
phone = "+15550100900"

[store]
path = "/var/lib/gateway/gateway.db"

[http]
listen = "127.0.0.1:8080"
public_url = "https://gateway.example.org"
{http}

[sms]
enabled = true
account_sid = "ACa1b2c3d4e5f60718293a4b5c6d7e8f90"
from = "+15550100000"
{sms}

[email]
enabled = true
address = "practice@example.org"

[email.smtp]
addr = "{smtp_addr}"
security = "{smtp_sec}"
username = "practice@example.org"
{smtp}

[email.imap]
addr = "mail.example.org:993"
security = "{imap_sec}"
username = "practice@example.org"
{imap}
`

// confText fills validConfig: extra lines for [http], [sms], [email.smtp]
// and [email.imap], and the mail servers' addresses and security (empty
// means a TLS server at mail.example.org).
type confText struct {
	http, sms, smtp, imap string
	smtpAddr, smtpSec     string
	imapSec               string
}

func (c confText) String() string {
	def := func(s, d string) string {
		if s == "" {
			return d
		}
		return s
	}
	return strings.NewReplacer("{http}", c.http, "{sms}", c.sms, "{smtp}", c.smtp, "{imap}", c.imap,
		"{smtp_addr}", def(c.smtpAddr, "mail.example.org:465"), "{smtp_sec}", def(c.smtpSec, "tls"),
		"{imap_sec}", def(c.imapSec, "tls")).Replace(validConfig)
}

func TestExampleConfigParses(t *testing.T) {
	cfg := mustParse(t, readExample(t), confSecretsEnv)

	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"sms.enabled", cfg.SMS.Enabled, true},
		{"email.enabled", cfg.Email.Enabled, true},
		{"email.smtp.security", cfg.Email.SMTP.Security, "tls"},
		{"email.imap.security", cfg.Email.IMAP.Security, "tls"},
		{"sms.auth_token", cfg.SMS.AuthToken, confTwilioToken},
		{"email.smtp.password", cfg.Email.SMTP.Password, confSMTPPass},
		{"email.imap.password", cfg.Email.IMAP.Password, confIMAPPass},
		{"http.admin_token", cfg.HTTP.AdminToken, confAdminToken},
		{"http.listen", cfg.HTTP.Listen, "127.0.0.1:8080"},
		{"store.path", cfg.Store.Path, "/var/lib/gateway/gateway.db"},
		{"checkins.times", len(cfg.Checkins.Times), 3},
		{"checkins.away", len(cfg.Checkins.Away), 1},
		{"clients", len(cfg.Clients), 2},
		{"oncall", len(cfg.OnCall), 2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if _, err := cfg.Calendar(); err != nil {
		t.Errorf("Calendar: %v", err)
	}
	if err := printCheck(&bytes.Buffer{}, cfg, time.Date(2026, 3, 4, 12, 0, 0, 0, cfg.Location())); err != nil {
		t.Errorf("printCheck: %v", err)
	}
}

func TestExampleConfigNeedsSecrets(t *testing.T) {
	// Without the environment the example must say which secrets are
	// missing, not start with empty passwords.
	lines := errorLines(t, readExample(t), confEnv())
	for _, key := range []string{"sms.auth_token", "email.smtp.password", "email.imap.password"} {
		l, ok := lineFor(lines, key)
		if !ok {
			t.Errorf("no error for %s in:\n%s", key, strings.Join(lines, "\n"))
			continue
		}
		if !strings.Contains(l, secretEnv[key]) {
			t.Errorf("%s error does not name %s: %s", key, secretEnv[key], l)
		}
	}
}

// configKeys lists every key Config can hold, as dotted paths:
// "practice.name", "clients.phone" (arrays of tables without an index),
// "wording.sms.first". Maps of plain values ("triage.extra") are listed in
// mapKeys, since any key under them is allowed.
func configKeys(t reflect.Type, prefix string, keys, mapKeys *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := prefix + strings.Split(f.Tag.Get("toml"), ",")[0]
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			configKeys(ft, name+".", keys, mapKeys)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			configKeys(ft.Elem(), name+".", keys, mapKeys)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			for _, ch := range []string{"sms", "email"} {
				configKeys(ft.Elem(), name+"."+ch+".", keys, mapKeys)
			}
		case ft.Kind() == reflect.Map:
			*mapKeys = append(*mapKeys, name)
		default:
			*keys = append(*keys, name)
		}
	}
}

// documentedKeys lists the keys the example sets or shows commented out,
// as dotted paths under their table.
func documentedKeys(text string) []string {
	header := regexp.MustCompile(`^#?\s*\[\[?([a-z][a-z0-9_.-]*)\]\]?\s*$`)
	key := regexp.MustCompile(`^#?\s*([a-z][a-z0-9_-]*)\s*=`)
	var out []string
	table := ""
	for _, l := range strings.Split(text, "\n") {
		if m := header.FindStringSubmatch(l); m != nil {
			table = m[1] + "."
		} else if m := key.FindStringSubmatch(l); m != nil {
			out = append(out, table+m[1])
		}
	}
	return out
}

func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	var keys, mapKeys []string
	configKeys(reflect.TypeFor[Config](), "", &keys, &mapKeys)
	documented := documentedKeys(readExample(t))

	for _, k := range keys {
		if !slices.Contains(documented, k) {
			t.Errorf("%s is not in %s; add it, set or commented out, with what it means", k, examplePath)
		}
	}
	for _, k := range mapKeys {
		if !slices.ContainsFunc(documented, func(d string) bool { return strings.HasPrefix(d, k+".") }) {
			t.Errorf("%s has no example in %s", k, examplePath)
		}
	}
	for _, d := range documented {
		known := slices.Contains(keys, d) ||
			slices.ContainsFunc(mapKeys, func(k string) bool { return strings.HasPrefix(d, k+".") })
		if !known {
			t.Errorf("%s documents %s, which Config does not have", examplePath, d)
		}
	}
	for _, env := range []string{"GATEWAY_TWILIO_AUTH_TOKEN", "GATEWAY_SMTP_PASSWORD", "GATEWAY_IMAP_PASSWORD",
		"GATEWAY_ADMIN_TOKEN", "GATEWAY_DB", "GATEWAY_LISTEN"} {
		if !strings.Contains(readExample(t), env) {
			t.Errorf("%s does not mention %s", examplePath, env)
		}
	}
}

// uncommentWording removes the "# " from the commented-out templates in the
// example's [wording.*] tables, including every line of a multi-line string.
func uncommentWording(text string) string {
	start := regexp.MustCompile(`^(first|repeat|urgent|unknown|help) = `)
	lines := strings.Split(text, "\n")
	inWording, inString := false, false
	for i, l := range lines {
		if strings.HasPrefix(l, "[") {
			inWording = strings.HasPrefix(l, "[wording.")
			continue
		}
		body, ok := strings.CutPrefix(l, "#")
		if !inWording || !ok {
			continue
		}
		body = strings.TrimPrefix(body, " ")
		switch {
		case inString:
			lines[i] = body
			inString = !strings.Contains(body, "'''")
		case start.MatchString(body):
			lines[i] = body
			inString = strings.Count(body, "'''") == 1
		}
	}
	return strings.Join(lines, "\n")
}

func TestExampleConfigWordingExamplesValidate(t *testing.T) {
	// The commented-out wording must pass the same checks once a therapist
	// uncomments it, so it cannot rot unnoticed.
	cfg := mustParse(t, uncommentWording(readExample(t)), confSecretsEnv)
	kinds := []policies.AckKind{policies.AckFirst, policies.AckRepeat, policies.AckUrgent, policies.AckUnknown, policies.AckHelp}
	over := cfg.wordingOverrides()
	w, err := policies.NewWording(over)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"sms", "email"} {
		for _, k := range kinds {
			if over[ch][k] == "" {
				t.Errorf("wording.%s.%s: no commented-out example in %s", ch, k, examplePath)
				continue
			}
			text, err := w.Render(ch, k, policies.Placeholders{NextCheckin: "Wednesday at 10 a.m.", Therapist: "Dr. Maria Rivera",
				CrisisLine: "988 (call or text)", Emergency: "911", UrgentKeyword: "URGENT"})
			if err != nil {
				t.Errorf("wording.%s.%s: %v", ch, k, err)
			}
			if strings.Contains(text, "{{") || strings.Contains(text, "\n# ") {
				t.Errorf("wording.%s.%s renders a template or comment marker:\n%s", ch, k, text)
			}
		}
	}
}

func TestDemoConfigValidates(t *testing.T) {
	getenv := confEnv("GATEWAY_TWILIO_AUTH_TOKEN", demoAuthToken)
	cfg := mustParse(t, demoText(t), getenv)
	if got, want := cfg.SMS.AccountSID, demoAccountSID; got != want {
		t.Errorf("sms.account_sid = %q, want %q", got, want)
	}
	if got, want := cfg.Email.SMTP.Addr, "127.0.0.1:2525"; got != want {
		t.Errorf("email.smtp.addr = %q, want %q", got, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigUnknownKey(t *testing.T) {
	example := readExample(t)
	for _, c := range []struct {
		name, from, to, want string
	}{
		{"misspelt therapist", `therapist = "Dr. Maria Rivera"`, `therapsit = "Dr. Maria Rivera"`, "practice.therapsit: unknown key"},
		{"misspelt wording kind", "[wording.sms]\n", "[wording.sms]\nfrist = \"hi\"\n", "wording.sms.frist: unknown key"},
		{"misspelt client key", `first_name = "Alex"`, `firstname = "Alex"`, "clients.firstname: unknown key"},
		{"misspelt table", "[outbox]", "[outbx]", "outbx: unknown key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(example, c.from, c.to, 1)
			if text == example {
				t.Fatalf("%q is not in the example", c.from)
			}
			_, err := ParseConfig(text, confSecretsEnv)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not say %q:\n%v", c.want, err)
			}
		})
	}
}

func TestConfigReportsAllProblems(t *testing.T) {
	const text = `
[practice]
therapist = "Dr. Maria Rivera"
time_zone = "America/New_Yrok"
digest_to = "maria.rivera@example.org"
emergncy = "911"

[checkins]
times = ["Mon 09:00", "Wed 25:00"]

[acks]
repeat = "sometimes"

[[oncall]]
name = "Dr. Sam Okafor"
phone = "12"

[http]
public_url = "https://gateway.example.org"

[sms]
enabled = true
account_sid = "AC123"
from = "+15550100000"

[email]
address = "practice@example.org"

[email.smtp]
addr = "mail.example.org:465"
security = "tls"
`
	lines := errorLines(t, text, confEnv("GATEWAY_TWILIO_AUTH_TOKEN", confTwilioToken))
	want := []struct{ key, fix string }{
		{"practice.emergncy", "check its spelling"},
		{"practice.time_zone", `write an IANA name such as "America/New_York"`},
		{"checkins.times[1]", `write it like "Wed 10:00"`},
		{"acks.repeat", `write "none"`},
		{"oncall[0].phone", "write it in E.164 form"},
		{"sms.account_sid", `must be "AC" and 32 hex digits`},
	}
	if got := len(lines); got != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", got, len(want), strings.Join(lines, "\n"))
	}
	for _, w := range want {
		l, ok := lineFor(lines, w.key)
		if !ok {
			t.Errorf("no error naming %s in:\n%s", w.key, strings.Join(lines, "\n"))
			continue
		}
		if !strings.Contains(l, w.fix) {
			t.Errorf("%s error does not say how to fix it (%q): %s", w.key, w.fix, l)
		}
	}
	keyed := regexp.MustCompile(`^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: `)
	for _, l := range lines {
		if !keyed.MatchString(l) {
			t.Errorf("error line does not start with its key: %q", l)
		}
	}
}

func TestConfigBadWording(t *testing.T) {
	example := readExample(t)
	for _, c := range []struct {
		name, line, want string
	}{
		{"misspelt placeholder", `first = "I'll read it {{.Nextcheckin}}."`,
			"wording.sms.first: uses {{.Nextcheckin}}, which does not exist"},
		{"no next check-in", `first = "{{with .FirstName}}Hi {{.}}. {{end}}Thanks for writing."`,
			"wording.sms.first: must use {{.NextCheckin}}"},
		{"template syntax", `first = "I'll read it {{.NextCheckin}"`,
			"wording.sms.first"},
		{"urgent without emergency", `urgent = "Call {{.CrisisLine}}."`,
			"wording.sms.urgent: must use {{.Emergency}}"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(example, "[wording.sms]\n", "[wording.sms]\n"+c.line+"\n", 1)
			lines := errorLines(t, text, confSecretsEnv)
			if !strings.Contains(strings.Join(lines, "\n"), c.want) {
				t.Errorf("error does not say %q:\n%s", c.want, strings.Join(lines, "\n"))
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "wording.sms.") {
					t.Errorf("error line does not name the wording key: %q", l)
				}
			}
		})
	}
}

// writeSecret writes one secret file in dir, with the trailing newline an
// editor or echo leaves.
func writeSecret(t *testing.T, dir, name, value string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSecrets(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeSecret(t, dir, "twilio_auth_token", confTwilioToken)
	smtpFile := writeSecret(t, dir, "smtp_password", confSMTPPass)
	imapFile := writeSecret(t, dir, "imap_password", confIMAPPass)
	adminFile := writeSecret(t, dir, "admin_token", confAdminToken)
	fileKeys := confText{
		sms:  `auth_token_file = "` + tokenFile + `"`,
		smtp: `password_file = "` + smtpFile + `"`,
		imap: `password_file = "` + imapFile + `"`,
		http: `admin_token_file = "` + adminFile + `"`,
	}

	for _, c := range []struct {
		name    string
		text    confText
		env     func(string) string
		wantErr string // a line starting with this; "" for success
	}{
		{"from env", confText{}, confSecretsEnv, ""},
		{"from files", fileKeys, confEnv(), ""},
		{"in the file itself", confText{
			sms:  `auth_token = "` + confTwilioToken + `"`,
			smtp: `password = "` + confSMTPPass + `"`,
			imap: `password = "` + confIMAPPass + `"`,
			http: `admin_token = "` + confAdminToken + `"`,
		}, confEnv(), ""},
		{"env and file", fileKeys, confEnv("GATEWAY_TWILIO_AUTH_TOKEN", confTwilioToken),
			"sms.auth_token: set both"},
		{"value and file", confText{
			sms: fileKeys.sms, smtp: fileKeys.smtp + "\npassword = \"x\"", imap: fileKeys.imap, http: fileKeys.http,
		}, confEnv(), "email.smtp.password: set both"},
		{"missing file", confText{
			sms: `auth_token_file = "` + filepath.Join(dir, "nope") + `"`, smtp: fileKeys.smtp, imap: fileKeys.imap,
		}, confEnv(), "sms.auth_token_file: "},
		{"missing password", confText{sms: fileKeys.sms, imap: fileKeys.imap}, confEnv(),
			"email.smtp.password: is empty while email.smtp.username is set"},
		{"malformed token", confText{}, confEnv("GATEWAY_TWILIO_AUTH_TOKEN", "not-a-token",
			"GATEWAY_SMTP_PASSWORD", confSMTPPass, "GATEWAY_IMAP_PASSWORD", confIMAPPass), "sms.auth_token: must be 32 hex digits"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig(c.text.String(), c.env)
			if c.wantErr != "" {
				if err == nil {
					t.Fatal("no error")
				}
				if _, ok := lineFor(strings.Split(err.Error(), "\n"), strings.Split(c.wantErr, ":")[0]); !ok ||
					!strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("error does not say %q:\n%v", c.wantErr, err)
				}
				for _, s := range []string{confTwilioToken, confSMTPPass, confIMAPPass, confAdminToken} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error shows a secret: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct{ name, got, want string }{
				{"sms.auth_token", cfg.SMS.AuthToken, confTwilioToken},
				{"email.smtp.password", cfg.Email.SMTP.Password, confSMTPPass},
				{"email.imap.password", cfg.Email.IMAP.Password, confIMAPPass},
				{"http.admin_token", cfg.HTTP.AdminToken, confAdminToken},
			} {
				if s.got != s.want {
					t.Errorf("%s = %q, want %q", s.name, s.got, s.want)
				}
			}
		})
	}
}

func TestConfigEnvOverrides(t *testing.T) {
	example := readExample(t)
	for _, c := range []struct {
		name               string
		db, listen         string
		wantPath, wantAddr string
	}{
		{"file values", "", "", "/var/lib/gateway/gateway.db", "127.0.0.1:8080"},
		{"GATEWAY_DB", "/srv/gateway/test.db", "", "/srv/gateway/test.db", "127.0.0.1:8080"},
		{"GATEWAY_LISTEN", "", "0.0.0.0:8080", "/var/lib/gateway/gateway.db", "0.0.0.0:8080"},
		{"both", "/srv/gateway/test.db", "[::1]:9090", "/srv/gateway/test.db", "[::1]:9090"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := func(k string) string {
				switch k {
				case "GATEWAY_DB":
					return c.db
				case "GATEWAY_LISTEN":
					return c.listen
				}
				return confSecretsEnv(k)
			}
			cfg := mustParse(t, example, env)
			if got := cfg.Store.Path; got != c.wantPath {
				t.Errorf("store.path = %q, want %q", got, c.wantPath)
			}
			if got := cfg.HTTP.Listen; got != c.wantAddr {
				t.Errorf("http.listen = %q, want %q", got, c.wantAddr)
			}
		})
	}

	// An override is validated like the file's value.
	lines := errorLines(t, example, func(k string) string {
		if k == "GATEWAY_LISTEN" {
			return "8080"
		}
		return confSecretsEnv(k)
	})
	if _, ok := lineFor(lines, "http.listen"); !ok {
		t.Errorf("GATEWAY_LISTEN=8080 not refused as http.listen:\n%s", strings.Join(lines, "\n"))
	}
}

func TestConfigPlainMail(t *testing.T) {
	for _, c := range []struct {
		name, addr, sec, imapSec string
		wantErr                  string // key of the expected error; "" for success
	}{
		{"smtp plain to a remote host", "mail.example.org:25", "none", "", "email.smtp.security"},
		{"smtp plain to an address", "192.0.2.25:25", "none", "", "email.smtp.security"},
		{"smtp plain to 127.0.0.1", "127.0.0.1:25", "none", "", ""},
		{"smtp plain to localhost", "localhost:25", "none", "", ""},
		{"smtp plain to ::1", "[::1]:25", "none", "", ""},
		{"smtp starttls", "mail.example.org:587", "starttls", "", ""},
		{"smtp unknown security", "mail.example.org:587", "ssl", "", "email.smtp.security"},
		{"imap plain to a remote host", "", "", "none", "email.imap.security"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := confText{smtpAddr: c.addr, smtpSec: c.sec, imapSec: c.imapSec}.String()
			_, err := ParseConfig(text, confSecretsEnv)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if _, ok := lineFor(strings.Split(err.Error(), "\n"), c.wantErr); !ok {
				t.Errorf("no error for %s:\n%v", c.wantErr, err)
			}
		})
	}
}

func TestPrintCheck(t *testing.T) {
	// The demo config with every secret set, so each must be redacted.
	cfg := mustParse(t, demoText(t), confEnv(
		"GATEWAY_TWILIO_AUTH_TOKEN", demoAuthToken,
		"GATEWAY_SMTP_PASSWORD", confSMTPPass,
		"GATEWAY_IMAP_PASSWORD", confIMAPPass,
		"GATEWAY_ADMIN_TOKEN", confAdminToken,
	))
	loc := cfg.Location()
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, loc) // a Wednesday, before the spring DST change
	var b bytes.Buffer
	if err := printCheck(&b, cfg, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()

	for _, secret := range []string{demoAuthToken, confSMTPPass, confIMAPPass, confAdminToken} {
		if strings.Contains(out, secret) {
			t.Errorf("check output shows a secret:\n%s", out)
		}
	}
	if got, want := strings.Count(out, "<redacted>"), 4; got != want {
		t.Errorf("%d secrets shown as <redacted>, want %d:\n%s", got, want, out)
	}
	if !strings.HasPrefix(out, "config OK\n") {
		t.Errorf("output does not start with \"config OK\":\n%s", out)
	}

	checkins := []time.Time{
		time.Date(2026, 3, 9, 9, 0, 0, 0, loc),
		time.Date(2026, 3, 11, 10, 0, 0, 0, loc),
		time.Date(2026, 3, 16, 9, 0, 0, 0, loc),
	}
	_, list, _ := strings.Cut(out, "next check-ins (America/New_York):\n")
	list, _, _ = strings.Cut(list, "\n\n")
	var want []string
	for _, at := range checkins {
		want = append(want, "  "+at.Format("Mon 2 Jan 2006 15:04 MST")+"  ("+policies.SpokenTime(at, now)+")")
	}
	if got := strings.Split(list, "\n"); !slices.Equal(got, want) {
		t.Errorf("check-ins:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(list, "EDT") {
		t.Errorf("check-ins after the DST change are not in EDT:\n%s", list)
	}

	next := policies.SpokenTime(checkins[0], now)
	for _, c := range []struct {
		channel, kind string
		mustSay       []string
	}{
		{"sms", "first", []string{"Alex", next}},
		{"sms", "repeat", nil},
		{"sms", "urgent", []string{"988", "911"}},
		{"sms", "unknown", []string{next}},
		{"sms", "help", nil},
		{"email", "first", []string{"Alex", next}},
		{"email", "repeat", nil},
		{"email", "urgent", []string{"988", "911"}},
		{"email", "unknown", []string{next}},
		{"email", "help", nil},
	} {
		header := "--- " + c.channel + " " + c.kind + " ---\n"
		_, text, ok := strings.Cut(out, header)
		if !ok {
			t.Errorf("no %q section:\n%s", strings.TrimSpace(header), out)
			continue
		}
		text, _, _ = strings.Cut(text, "\n--- ")
		if strings.TrimSpace(text) == "" || strings.Contains(text, "{{") {
			t.Errorf("%s %s sample is empty or unrendered: %q", c.channel, c.kind, text)
		}
		for _, s := range c.mustSay {
			if !strings.Contains(text, s) {
				t.Errorf("%s %s sample does not say %q:\n%s", c.channel, c.kind, s, text)
			}
		}
	}
}
