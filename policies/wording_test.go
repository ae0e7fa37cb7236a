package policies

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// realistic are long but plausible values: the SMS size test uses them.
func realistic() Placeholders {
	return Placeholders{
		FirstName:     "Alexandra",
		NextCheckin:   "Wednesday, January 14 at 10:30 a.m.",
		Therapist:     "Dr. Maria Rivera-Lopez",
		Practice:      "Riverside Counseling",
		CrisisLine:    "988 (call or text)",
		Emergency:     "911",
		UrgentKeyword: "URGENT",
		OnCallTold:    true,
	}
}

func mustWording(t *testing.T, overrides map[string]map[AckKind]string) *Wording {
	t.Helper()
	w, err := NewWording(overrides)
	if err != nil {
		t.Fatalf("NewWording: %v", err)
	}
	return w
}

func mustRender(t *testing.T, w *Wording, channel string, kind AckKind, p Placeholders) string {
	t.Helper()
	s, err := w.Render(channel, kind, p)
	if err != nil {
		t.Fatalf("Render(%s, %s): %v", channel, kind, err)
	}
	return s
}

func TestDefaultWordingGolden(t *testing.T) {
	w := mustWording(t, nil)
	for _, ch := range channels {
		for _, kind := range ackKinds {
			t.Run(ch+"/"+string(kind), func(t *testing.T) {
				got := mustRender(t, w, ch, kind, realistic()) + "\n"
				path := filepath.Join("testdata", "wording", ch+"_"+string(kind)+".golden")
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./policies -update)", err)
				}
				if got != string(want) {
					t.Fatalf("%s differs from %s (run go test ./policies -update if the change is wanted):\ngot:\n%s\nwant:\n%s", ch+"/"+string(kind), path, got, want)
				}
			})
		}
	}
}

// gsm7Basic is the GSM 03.38 default alphabet; gsm7Ext are the characters
// sent with an escape, so each counts as two.
const (
	gsm7Basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	gsm7Ext   = "^{}\\[]~|€\f"
)

// gsm7Len returns the number of GSM-7 septets s needs, and false if s has a
// character GSM-7 cannot carry (it would be sent as UCS-2).
func gsm7Len(s string) (int, bool) {
	n := 0
	for _, r := range s {
		switch {
		case strings.ContainsRune(gsm7Ext, r):
			n += 2
		case strings.ContainsRune(gsm7Basic, r):
			n++
		default:
			return 0, false
		}
	}
	return n, true
}

// smsSegments counts GSM-7 segments: 160 septets in one, 153 each when
// concatenated.
func smsSegments(septets int) int {
	if septets <= 160 {
		return 1
	}
	return (septets + 152) / 153
}

func TestGSM7Len(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		ok   bool
		segs int
	}{
		{"Hello", 5, true, 1},
		{"a{b}", 6, true, 1},
		{"€5", 3, true, 1},
		{"it’s", 0, false, 0},
		{"a — b", 0, false, 0},
		{"hi 🙂", 0, false, 0},
		{strings.Repeat("a", 160), 160, true, 1},
		{strings.Repeat("a", 161), 161, true, 2},
		{strings.Repeat("a", 306), 306, true, 2},
		{strings.Repeat("a", 307), 307, true, 3},
		{strings.Repeat("a", 305) + "[", 307, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			n, ok := gsm7Len(tt.s)
			if n != tt.n || ok != tt.ok {
				t.Fatalf("gsm7Len(%q) = %d, %v, want %d, %v", tt.s, n, ok, tt.n, tt.ok)
			}
			if ok {
				if got := smsSegments(n); got != tt.segs {
					t.Fatalf("smsSegments(%d) = %d, want %d", n, got, tt.segs)
				}
			}
		})
	}
}

// TestDefaultSMSFitsTwoSegments: CARE.md asks for one or two segments on
// SMS, and plain GSM-7 keeps a segment at 153-160 characters instead of
// UCS-2's 67-70.
func TestDefaultSMSFitsTwoSegments(t *testing.T) {
	w := mustWording(t, nil)
	for _, kind := range ackKinds {
		for _, onCall := range []bool{true, false} {
			for _, first := range []string{"Alexandra", ""} {
				p := realistic()
				p.OnCallTold, p.FirstName = onCall, first
				t.Run(string(kind), func(t *testing.T) {
					s := mustRender(t, w, "sms", kind, p)
					n, ok := gsm7Len(s)
					if !ok {
						t.Fatalf("sms/%s has a character outside GSM-7: %q", kind, s)
					}
					if n > 306 {
						t.Fatalf("sms/%s is %d GSM-7 characters (%d segments), want at most 306: %q", kind, n, smsSegments(n), s)
					}
				})
			}
		}
	}
}

func TestDefaultWordingCare(t *testing.T) {
	w := mustWording(t, nil)
	for _, ch := range channels {
		t.Run(ch, func(t *testing.T) {
			p := realistic()

			// Urgent: crisis line and emergency number first; the on-call
			// claim only when true; no call-back time.
			p.OnCallTold = true
			told := mustRender(t, w, ch, AckUrgent, p)
			crisis, emergency := strings.Index(told, p.CrisisLine), strings.Index(told, p.Emergency)
			passed := strings.Index(told, "passed to the clinician on call now")
			if crisis < 0 || emergency < 0 || passed < 0 {
				t.Fatalf("urgent (on call told) lacks crisis line, emergency number or the on-call sentence: %q", told)
			}
			if passed < crisis || passed < emergency {
				t.Fatalf("urgent must give the crisis line and emergency number before the on-call sentence: %q", told)
			}
			p.OnCallTold = false
			notTold := mustRender(t, w, ch, AckUrgent, p)
			for _, claim := range []string{"passed", "on call", "on-call"} {
				if strings.Contains(notTold, claim) {
					t.Fatalf("urgent (on call not told) must not mention %q: %q", claim, notTold)
				}
			}
			for _, s := range []string{told, notTold} {
				if !strings.Contains(s, p.CrisisLine) || !strings.Contains(s, p.Emergency) {
					t.Fatalf("urgent lacks crisis line or emergency number: %q", s)
				}
				for _, promise := range []string{"call you", "within", "minutes", "hours", "soon", "shortly", "back to you"} {
					if strings.Contains(s, promise) {
						t.Fatalf("urgent must not promise a call-back (%q): %q", promise, s)
					}
				}
			}

			for _, kind := range []AckKind{AckFirst, AckRepeat, AckUnknown, AckHelp} {
				s := mustRender(t, w, ch, kind, realistic())
				if !strings.Contains(s, realistic().NextCheckin) {
					t.Fatalf("%s/%s does not name the next check-in: %q", ch, kind, s)
				}
				if !strings.Contains(s, "988") || !strings.Contains(s, "911") {
					t.Fatalf("%s/%s lacks the urgent path: %q", ch, kind, s)
				}
			}
			if s := mustRender(t, w, ch, AckRepeat, realistic()); !strings.HasPrefix(s, "Got this one too") && !strings.Contains(s, "\n\nGot this one too") {
				t.Fatalf("%s/repeat does not say it got this one too: %q", ch, s)
			}
			if s := mustRender(t, w, ch, AckFirst, realistic()); !strings.Contains(s, "URGENT") {
				t.Fatalf("%s/first does not name the urgent keyword: %q", ch, s)
			}
		})
	}
	if s := mustRender(t, w, "sms", AckHelp, realistic()); !strings.Contains(s, "STOP") {
		t.Fatalf("sms/help does not say how to stop texts: %q", s)
	}
	if s := mustRender(t, w, "email", AckFirst, realistic()); !strings.Contains(s, "write down what you are feeling") {
		t.Fatalf("email/first lacks a small step for now: %q", s)
	}
}

// TestDefaultWordingEmptyValues: an unknown first name, practice or check-in
// still reads well.
func TestDefaultWordingEmptyValues(t *testing.T) {
	w := mustWording(t, nil)
	p := realistic()
	p.FirstName, p.Practice, p.NextCheckin = "", "", ""
	for _, ch := range channels {
		for _, kind := range ackKinds {
			for _, onCall := range []bool{true, false} {
				p.OnCallTold = onCall
				t.Run(ch+"/"+string(kind), func(t *testing.T) {
					s := mustRender(t, w, ch, kind, p)
					for _, bad := range []string{" ,", " .", ",,", "  ", " at .", "on at", "<no value>"} {
						if strings.Contains(s, bad) {
							t.Fatalf("%s/%s reads badly with empty values (%q): %q", ch, kind, bad, s)
						}
					}
					if kind != AckUrgent || !onCall {
						if kind != AckHelp && kind != AckUrgent && !strings.Contains(s, "at the next check-in") {
							t.Fatalf("%s/%s with no check-in: %q", ch, kind, s)
						}
					}
				})
			}
		}
	}
}

// TestDefaultWordingQuotedBack: a client who quotes a routine
// acknowledgement back must not be flagged urgent by it.
func TestDefaultWordingQuotedBack(t *testing.T) {
	w := mustWording(t, nil)
	tr := mustTriage(t, "URGENT", nil)
	for _, ch := range channels {
		for _, kind := range []AckKind{AckFirst, AckRepeat, AckUnknown, AckHelp} {
			t.Run(ch+"/"+string(kind), func(t *testing.T) {
				s := mustRender(t, w, ch, kind, realistic())
				if v := tr.Classify("", "Thanks, see you then.\n\n"+s); v.Urgent {
					t.Fatalf("%s/%s quoted back classifies urgent: %+v", ch, kind, v)
				}
			})
		}
	}
}

func TestNewWordingOverrides(t *testing.T) {
	w := mustWording(t, map[string]map[AckKind]string{
		"sms": {AckFirst: "Got it{{with .FirstName}}, {{.}}{{end}}. Reading {{.NextCheckin}}."},
	})
	if got, want := mustRender(t, w, "sms", AckFirst, realistic()), "Got it, Alexandra. Reading Wednesday, January 14 at 10:30 a.m."; got != want {
		t.Fatalf("override: got %q, want %q", got, want)
	}
	if got, want := mustRender(t, w, "sms", AckRepeat, realistic()), mustRender(t, mustWording(t, nil), "sms", AckRepeat, realistic()); got != want {
		t.Fatalf("a kind not overridden must keep its default: got %q, want %q", got, want)
	}
	if _, err := NewWording(map[string]map[AckKind]string{"email": nil}); err != nil {
		t.Fatalf("nil inner map: %v", err)
	}
}

func TestNewWordingErrors(t *testing.T) {
	tests := []struct {
		name      string
		overrides map[string]map[AckKind]string
		want      []string // each must appear in the error
	}{
		{
			"misspelt placeholder",
			map[string]map[AckKind]string{"sms": {AckFirst: "I'll read it {{.Nextcheckin}}."}},
			[]string{"wording.sms.first: uses {{.Nextcheckin}}, which does not exist; the placeholders are {{.FirstName}}, {{.NextCheckin}}", "did you mean {{.NextCheckin}}?"},
		},
		{
			"unknown placeholder via $",
			map[string]map[AckKind]string{"email": {AckRepeat: "Got it {{$.Name}}."}},
			[]string{"wording.email.repeat: uses {{.Name}}, which does not exist"},
		},
		{
			"parse error",
			map[string]map[AckKind]string{"sms": {AckRepeat: "Got it {{.FirstName}."}},
			[]string{"wording.sms.repeat:1:"},
		},
		{
			"unknown function",
			map[string]map[AckKind]string{"sms": {AckRepeat: "Got it {{upper .FirstName}}."}},
			[]string{"wording.sms.repeat:1:", `"upper" not defined`},
		},
		{
			"execution error",
			map[string]map[AckKind]string{"sms": {AckRepeat: `Got it {{template "x"}}.`}},
			[]string{"wording.sms.repeat", `"x"`},
		},
		{
			"first without the window",
			map[string]map[AckKind]string{"sms": {AckFirst: "Thanks for your message."}},
			[]string{"wording.sms.first: must use {{.NextCheckin}}"},
		},
		{
			"unknown without the window",
			map[string]map[AckKind]string{"email": {AckUnknown: "Thanks for your message."}},
			[]string{"wording.email.unknown: must use {{.NextCheckin}}"},
		},
		{
			"window only with a first name",
			map[string]map[AckKind]string{"sms": {AckFirst: "Thanks{{with .FirstName}} {{.}}, I'll read it {{$.NextCheckin}}{{end}}."}},
			[]string{"wording.sms.first: must show {{.NextCheckin}} in every case, but it is missing when FirstName is empty"},
		},
		{
			"urgent hard-codes the numbers",
			map[string]map[AckKind]string{"sms": {AckUrgent: "Call 911 or 988 now."}},
			[]string{"wording.sms.urgent: must use {{.CrisisLine}}", "wording.sms.urgent: must use {{.Emergency}}"},
		},
		{
			"urgent crisis line only when on call was told",
			map[string]map[AckKind]string{"email": {AckUrgent: "Call {{.Emergency}}. {{if .OnCallTold}}Or {{.CrisisLine}}.{{end}}"}},
			[]string{"wording.email.urgent: must show {{.CrisisLine}} in every case, but it is missing when OnCallTold is false"},
		},
		{
			"empty",
			map[string]map[AckKind]string{"sms": {AckRepeat: "  "}},
			[]string{"wording.sms.repeat: renders empty"},
		},
		{
			"empty without a first name",
			map[string]map[AckKind]string{"sms": {AckRepeat: "{{.FirstName}}"}},
			[]string{"wording.sms.repeat: renders empty when FirstName is empty"},
		},
		{
			"stray comma without a first name",
			map[string]map[AckKind]string{"sms": {AckRepeat: "Hi {{.FirstName}}, got this one too."}},
			[]string{"wording.sms.repeat: reads badly when FirstName is empty", "{{with .FirstName}}"},
		},
		{
			"unknown channel",
			map[string]map[AckKind]string{"fax": {AckFirst: "x"}},
			[]string{"wording.fax: unknown channel; the channels are sms, email"},
		},
		{
			"unknown kind",
			map[string]map[AckKind]string{"email": {"frist": "x"}},
			[]string{"wording.email.frist: unknown kind; the kinds are first, repeat, urgent, unknown, help"},
		},
		{
			"several problems together",
			map[string]map[AckKind]string{
				"sms":   {AckFirst: "{{.Nextcheckin}}", AckHelp: "{{"},
				"email": {AckUrgent: "Sorry."},
				"pager": {AckFirst: "x"},
			},
			[]string{"wording.sms.first:", "wording.sms.help:", "wording.email.urgent:", "wording.pager:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWording(tt.overrides)
			if err == nil {
				t.Fatalf("NewWording succeeded, want an error")
			}
			if w != nil {
				t.Fatalf("NewWording returned a Wording with an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestRenderUnknown(t *testing.T) {
	w := mustWording(t, nil)
	tests := []struct {
		channel string
		kind    AckKind
	}{
		{"fax", AckFirst},
		{"sms", "frist"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.channel+"/"+string(tt.kind), func(t *testing.T) {
			if _, err := w.Render(tt.channel, tt.kind, realistic()); err == nil {
				t.Fatalf("Render(%q, %q) succeeded, want an error", tt.channel, tt.kind)
			}
		})
	}
}

func TestDefaultWordingIsACopy(t *testing.T) {
	d := DefaultWording()
	d["sms"][AckFirst] = "changed"
	if got := DefaultWording()["sms"][AckFirst]; got == "changed" {
		t.Fatalf("DefaultWording shares its maps")
	}
}
