package policies

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
)

// AckKind says which acknowledgement to send.
type AckKind string

// The acknowledgement kinds.
const (
	AckFirst   AckKind = "first"   // first full acknowledgement in a check-in window
	AckRepeat  AckKind = "repeat"  // brief "got this one too"
	AckUrgent  AckKind = "urgent"  // message sounded unsafe: passed to on-call now; crisis line + emergency first
	AckUnknown AckKind = "unknown" // sender is not a known client
	AckHelp    AckKind = "help"    // reply to the SMS keyword HELP
)

// ackKinds lists the kinds in the order errors and files name them.
var ackKinds = []AckKind{AckFirst, AckRepeat, AckUrgent, AckUnknown, AckHelp}

// channels lists the channels that have wording.
var channels = []string{"sms", "email"}

// Placeholders are the values templates may use: {{.FirstName}} (may be
// empty; templates must read well then, e.g. {{with .FirstName}}Hi {{.}},
// {{end}}), {{.NextCheckin}} (SpokenTime output), {{.Therapist}},
// {{.Practice}} (may be empty), {{.CrisisLine}} (e.g. "988 (call or text)"),
// {{.Emergency}} (e.g. "911"), {{.UrgentKeyword}} (e.g. "URGENT") and
// {{.OnCallTold}} (the on-call clinician was told now). Templates never see
// the client's own text.
type Placeholders struct {
	FirstName     string
	NextCheckin   string
	Therapist     string
	Practice      string
	CrisisLine    string
	Emergency     string
	UrgentKeyword string
	OnCallTold    bool
}

// placeholderNames are the fields of Placeholders, in declaration order.
var placeholderNames = []string{
	"FirstName", "NextCheckin", "Therapist", "Practice",
	"CrisisLine", "Emergency", "UrgentKeyword", "OnCallTold",
}

// careRequired lists, per kind, the placeholders CARE.md says the text must
// show, with the reason given in the error.
var careRequired = map[AckKind][]struct{ field, why string }{
	AckFirst:   {{"NextCheckin", "a client must be told when it will be read"}},
	AckUnknown: {{"NextCheckin", "a client must be told when it will be read"}},
	AckUrgent: {
		{"CrisisLine", "an unsafe message must be answered with the crisis line"},
		{"Emergency", "an unsafe message must be answered with the emergency number"},
	},
}

// The built-in texts. They follow CARE.md: receipt and warmth, validation
// without reading the content, the concrete window, where it goes next, (on
// email) a small step for now, and the urgent path. SMS texts use plain
// GSM-7 characters only and stay within two segments with realistic values
// (see TestDefaultSMSFitsTwoSegments). Each reads well with an empty
// FirstName or Practice, and none uses the words the triage listens for
// (so a client quoting an acknowledgement back is not flagged), apart from
// the urgent keyword in the forms the triage ignores ("start a text with
// URGENT").
const (
	smsFirst = `{{with .FirstName}}Hi {{.}}, thanks{{else}}Thanks{{end}} for reaching out. Your message arrived, and it matters. I'll read it {{.NextCheckin}}, and we can make room for it in our next session. If it can't wait: {{.CrisisLine}}, {{.Emergency}} if you're in immediate danger, or start a text with {{.UrgentKeyword}} for the clinician on call.`

	smsRepeat = `Got this one too{{with .FirstName}}, {{.}}{{end}}. Thank you. I'll still read everything {{.NextCheckin}}. If it can't wait: {{.CrisisLine}}, or {{.Emergency}} if you're in immediate danger.`

	smsUrgent = `{{with .FirstName}}{{.}}, if{{else}}If{{end}} you are in immediate danger, call {{.Emergency}} now. For crisis support right away: {{.CrisisLine}}. {{if .OnCallTold}}Your message has been passed to the clinician on call now. Please use those numbers whenever you need help.{{else}}I'll read your message {{.NextCheckin}}; if you need help before then, please use those numbers rather than wait for a reply here.{{end}} Thank you for reaching out.`

	smsUnknown = `Thanks for your message. This number reaches {{.Therapist}}{{with .Practice}} at {{.}}{{end}}, who will read it {{.NextCheckin}}. If you're a client texting from a new number, please send your full name. If it can't wait: {{.CrisisLine}}, or {{.Emergency}} if you're in immediate danger.`

	smsHelp = `This number takes messages for {{.Therapist}}{{with .Practice}} at {{.}}{{end}} between sessions. One sent now will be read {{.NextCheckin}}. If it can't wait: {{.CrisisLine}}, {{.Emergency}} if you're in immediate danger, or start a text with {{.UrgentKeyword}}. Reply STOP to stop texts.`

	emailFirst = `{{with .FirstName}}Dear {{.}},{{else}}Hello,{{end}}

Thank you for writing. Your message has arrived safely, and I'm glad you reached out.

What you wrote matters, and it deserves my full attention rather than a quick reply. I read messages at set check-in times, and I will read yours {{.NextCheckin}}. We can then bring it into our next session, so you don't have to hold it on your own until then.

In the meantime, if it helps, you could use one of the skills we have practised together, or write down what you are feeling so you can bring it along.

If it can't wait:
- If you are in immediate danger, call {{.Emergency}}.
- For crisis support at any hour, contact {{.CrisisLine}}.
- To reach the clinician on call, send a new message that starts with {{.UrgentKeyword}}.

Warmly,
{{.Therapist}}{{with .Practice}}
{{.}}{{end}}

This is an automatic reply, so that you know your message arrived.`

	emailRepeat = `{{with .FirstName}}Dear {{.}},{{else}}Hello,{{end}}

Got this one too, thank you. It is with your earlier messages, and I will still read them all {{.NextCheckin}}.

If it can't wait: call {{.Emergency}} if you are in immediate danger, contact {{.CrisisLine}} for crisis support, or send a new message that starts with {{.UrgentKeyword}} to reach the clinician on call.

{{.Therapist}}`

	emailUrgent = `{{with .FirstName}}{{.}}, if{{else}}If{{end}} you are in immediate danger, please call {{.Emergency}} now.
For crisis support at any hour, contact {{.CrisisLine}}.

{{if .OnCallTold}}Your message has been passed to the clinician on call now. Please use the numbers above whenever you need help.{{else}}I will read your message {{.NextCheckin}}. If you need help before then, please use the numbers above rather than wait for a reply here.{{end}}

Thank you for reaching out. You did the right thing.

{{.Therapist}}`

	emailUnknown = `Hello,

Thank you for your message. This address receives messages for {{.Therapist}}{{with .Practice}} at {{.}}{{end}}. Messages are read at set check-in times, so yours will be read {{.NextCheckin}}.

If you are a client writing from a new address, please reply with your full name so that your message reaches the right place.

If it can't wait:
- If you are in immediate danger, call {{.Emergency}}.
- For crisis support at any hour, contact {{.CrisisLine}}.

This is an automatic reply, so that you know your message arrived.`

	emailHelp = `Hello,

This address is for messages to {{.Therapist}}{{with .Practice}} at {{.}}{{end}} between sessions. Messages are read at set check-in times, and one sent now will be read {{.NextCheckin}}. Each message gets a short automatic reply so that you know it arrived.

If it can't wait:
- If you are in immediate danger, call {{.Emergency}}.
- For crisis support at any hour, contact {{.CrisisLine}}.
- To reach the clinician on call, send a new message that starts with {{.UrgentKeyword}}.

{{.Therapist}}`
)

// DefaultWording returns the built-in texts, map[channel]map[AckKind]text,
// for the channels "sms" and "email" and all five kinds. The maps are new on
// every call, so the caller may change them.
func DefaultWording() map[string]map[AckKind]string {
	return map[string]map[AckKind]string{
		"sms": {
			AckFirst:   smsFirst,
			AckRepeat:  smsRepeat,
			AckUrgent:  smsUrgent,
			AckUnknown: smsUnknown,
			AckHelp:    smsHelp,
		},
		"email": {
			AckFirst:   emailFirst,
			AckRepeat:  emailRepeat,
			AckUrgent:  emailUrgent,
			AckUnknown: emailUnknown,
			AckHelp:    emailHelp,
		},
	}
}

// Wording holds parsed and validated templates. It is safe for concurrent
// use.
type Wording struct {
	t map[string]map[AckKind]*template.Template
}

// NewWording parses the defaults overlaid with overrides (same shape as
// DefaultWording; either map may be nil or miss entries) and validates every
// template, so a typo fails at start-up, not at 3 a.m.:
//
//   - parse errors;
//   - placeholders that do not exist ({{.Nextcheckin}}), and any other
//     error from rendering sample data with missingkey=error;
//   - CARE.md: "first" and "unknown" must show {{.NextCheckin}}, and
//     "urgent" must show {{.CrisisLine}} and {{.Emergency}}, whatever
//     FirstName and OnCallTold are;
//   - every kind must render non-empty, and read without a stray " ,"
//     or " ." when FirstName is empty;
//   - unknown channel or kind names.
//
// Errors name the key the operator wrote, e.g.
// `wording.sms.first: uses {{.Nextcheckin}}, which does not exist; the placeholders are ...`,
// and all problems come back together, joined with errors.Join.
func NewWording(overrides map[string]map[AckKind]string) (*Wording, error) {
	texts := DefaultWording()
	var errs []error
	for _, ch := range slices.Sorted(maps.Keys(overrides)) {
		if _, ok := texts[ch]; !ok {
			errs = append(errs, fmt.Errorf("wording.%s: unknown channel; the channels are %s", ch, strings.Join(channels, ", ")))
			continue
		}
		for _, kind := range slices.Sorted(maps.Keys(overrides[ch])) {
			if !slices.Contains(ackKinds, kind) {
				errs = append(errs, fmt.Errorf("wording.%s.%s: unknown kind; the kinds are %s", ch, kind, kindList()))
				continue
			}
			texts[ch][kind] = overrides[ch][kind]
		}
	}

	w := &Wording{t: make(map[string]map[AckKind]*template.Template)}
	for _, ch := range channels {
		w.t[ch] = make(map[AckKind]*template.Template)
		for _, kind := range ackKinds {
			t, err := compile("wording."+ch+"."+string(kind), kind, texts[ch][kind])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			w.t[ch][kind] = t
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return w, nil
}

// Render fills the template for channel and kind, trimming surrounding
// space and the doubled period of "a.m.." at the end of a sentence. An
// empty p.NextCheckin is said as SpokenTime says a zero time
// ("at the next check-in"), so the sentence still reads.
func (w *Wording) Render(channel string, kind AckKind, p Placeholders) (string, error) {
	byKind, ok := w.t[channel]
	if !ok {
		return "", fmt.Errorf("wording: unknown channel %q", channel)
	}
	t, ok := byKind[kind]
	if !ok {
		return "", fmt.Errorf("wording.%s: unknown kind %q", channel, kind)
	}
	if p.NextCheckin == "" {
		p.NextCheckin = spokenUnknown
	}
	return execute(t, p)
}

func execute(t *template.Template, p Placeholders) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		return "", fmt.Errorf("wording: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	return strings.TrimSpace(abbrevPeriod.Replace(b.String())), nil
}

// abbrevPeriod drops the doubled period when a sentence ends with a spoken
// time ("I'll read it Monday at 9 a.m.."), so templates can end a sentence
// with {{.NextCheckin}} naturally.
var abbrevPeriod = strings.NewReplacer("a.m..", "a.m.", "p.m..", "p.m.")

// sample is what validation renders with. Each placeholder that CARE.md
// requires has a marker value, so the check sees the placeholder itself and
// not, say, a hard-coded "911".
func sample(firstName string, onCall bool) Placeholders {
	return Placeholders{
		FirstName:     firstName,
		NextCheckin:   "[[NextCheckin]]",
		Therapist:     "[[Therapist]]",
		Practice:      "[[Practice]]",
		CrisisLine:    "[[CrisisLine]]",
		Emergency:     "[[Emergency]]",
		UrgentKeyword: "[[UrgentKeyword]]",
		OnCallTold:    onCall,
	}
}

// compile parses one template and checks it as NewWording describes.
// name is the operator's key, "wording.sms.first".
func compile(name string, kind AckKind, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: "))
	}

	var errs []error
	for _, f := range unknownFields(t) {
		msg := fmt.Sprintf("%s: uses {{.%s}}, which does not exist; the placeholders are %s", name, f, placeholderList())
		for _, p := range placeholderNames {
			if strings.EqualFold(p, f) {
				msg += fmt.Sprintf("; did you mean {{.%s}}?", p)
			}
		}
		errs = append(errs, errors.New(msg))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	type variant struct {
		desc string
		out  string
	}
	var vs []variant
	for _, first := range []string{"Alexandra", ""} {
		for _, onCall := range []bool{true, false} {
			out, err := execute(t, sample(first, onCall))
			if err != nil {
				return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "wording: "))
			}
			desc := fmt.Sprintf("OnCallTold is %v", onCall)
			if first == "" {
				desc = "FirstName is empty and " + desc
			}
			vs = append(vs, variant{desc, out})
		}
	}

	for _, req := range careRequired[kind] {
		marker := "[[" + req.field + "]]"
		var missing []string
		for _, v := range vs {
			if !strings.Contains(v.out, marker) {
				missing = append(missing, v.desc)
			}
		}
		switch {
		case len(missing) == len(vs):
			errs = append(errs, fmt.Errorf("%s: must use {{.%s}} (CARE.md: %s)", name, req.field, req.why))
		case len(missing) > 0:
			errs = append(errs, fmt.Errorf("%s: must show {{.%s}} in every case, but it is missing when %s (CARE.md: %s)",
				name, req.field, strings.Join(missing, "; when "), req.why))
		}
	}

	named := vs[0].out
	for _, v := range vs[2:] { // FirstName empty
		if v.out == "" {
			errs = append(errs, fmt.Errorf("%s: renders empty when %s", name, v.desc))
			continue
		}
		for _, bad := range []string{" ,", " .", ",.", ",,", ",!"} {
			if strings.Contains(v.out, bad) && !strings.Contains(named, bad) {
				errs = append(errs, fmt.Errorf("%s: reads badly when FirstName is empty (%q); write e.g. {{with .FirstName}}Hi {{.}}, {{end}}",
					name, around(v.out, bad)))
				break
			}
		}
	}
	if vs[0].out == "" {
		errs = append(errs, fmt.Errorf("%s: renders empty", name))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// around returns a little of s on each side of the first sub, for an error.
func around(s, sub string) string {
	i := strings.Index(s, sub)
	start, end := max(0, i-12), min(len(s), i+len(sub)+12)
	return strings.ToValidUTF8(s[start:end], "")
}

// unknownFields returns the fields t (and any template it defines) names
// that Placeholders does not have, in the order they appear.
func unknownFields(t *template.Template) []string {
	var out []string
	seen := map[string]bool{}
	add := func(f string) {
		if !slices.Contains(placeholderNames, f) && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.IfNode:
			walkBranch(&n.BranchNode, walk)
		case *parse.RangeNode:
			walkBranch(&n.BranchNode, walk)
		case *parse.WithNode:
			walkBranch(&n.BranchNode, walk)
		case *parse.TemplateNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.ChainNode:
			walk(n.Node)
		case *parse.FieldNode:
			add(n.Ident[0])
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				add(n.Ident[1])
			}
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return out
}

func walkBranch(b *parse.BranchNode, walk func(parse.Node)) {
	walk(b.Pipe)
	walk(b.List)
	if b.ElseList != nil {
		walk(b.ElseList)
	}
}

func placeholderList() string {
	s := make([]string, len(placeholderNames))
	for i, p := range placeholderNames {
		s[i] = "{{." + p + "}}"
	}
	return strings.Join(s, ", ")
}

func kindList() string {
	s := make([]string, len(ackKinds))
	for i, k := range ackKinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
