package policies

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
)

// Verdict is what Triage makes of a message. The gateway forwards an urgent
// message to the on-call clinician with Category and Evidence as the reason.
//
// Evidence quotes words from the client's message: treat it as client
// content (never log it).
type Verdict struct {
	Urgent     bool
	Category   string   // "" when routine; else one of the Category* constants
	Evidence   []string // the matched words/phrases, lower case, in the order they appear
	Confidence float64  // 0..1: how strongly the evidence points to Category; 0 when routine
}

// The triage categories. When a message matches several, Verdict.Category
// is the first in this list's order of precedence: suicide,
// medical-emergency, harm-to-others, abuse, self-harm, acute-crisis,
// client-marked-urgent.
const (
	CategorySuicide      = "suicide"
	CategorySelfHarm     = "self-harm"
	CategoryHarmToOthers = "harm-to-others"
	CategoryAbuse        = "abuse"
	CategoryMedical      = "medical-emergency"
	CategoryCrisis       = "acute-crisis"
	CategoryMarkedUrgent = "client-marked-urgent"
)

// categories in order of precedence.
var categories = []string{
	CategorySuicide, CategoryMedical, CategoryHarmToOthers, CategoryAbuse,
	CategorySelfHarm, CategoryCrisis, CategoryMarkedUrgent,
}

// Phrase weights: how strongly one phrase alone points to its category.
const (
	weightStrong   = 0.9 // says it outright: "kill myself", "chest pain"
	weightIndirect = 0.7 // common indirect or slang forms: "better off without me"
	weightWeak     = 0.5 // often benign, urgent only because of doubt: "hurt myself"
	weightExtra    = 0.8 // phrases the practice added in config
	weightKeyword  = 1.0 // the client marked it urgent
	negatedFactor  = 0.5 // a phrase with "not"/"never"... just before it still counts, at this fraction
	negationWindow = 3   // tokens before a phrase searched for a negation
	blank          = "~" // separates subject from body so no phrase spans both; normalize never produces it
)

// negations lower a phrase's weight when they come just before it ("I'm not
// suicidal"). They never clear it: triage leans towards urgent.
var negations = map[string]bool{
	"not": true, "no": true, "never": true, "isnt": true, "wasnt": true,
	"dont": true, "didnt": true, "doesnt": true, "nor": true,
}

type phrase struct {
	text   string
	weight float64
}

// builtin is the first, deliberately small phrase list. Phrases are written
// naturally and normalized like message text, so "don't want to wake up"
// also matches "dont wanna wake up" and "do not want to wake up".
var builtin = map[string][]phrase{
	CategorySuicide: join(
		weighted(weightStrong,
			"kill myself", "killing myself", "kms", "suicide", "suicidal", "unalive", "un-alive",
			"end my life", "ending my life", "end it all", "take my own life", "take my life",
			"took all my pills", "took all of my pills", "took the whole bottle",
			"hang myself", "hanging myself", "shoot myself", "sewer slide",
			"want to die", "wish I was dead", "wish I were dead", "better off dead",
			"better off without me", "don't want to live", "don't want to be alive",
			"don't want to wake up", "no reason to live", "nothing to live for",
			"not worth living", "jump off a bridge", "jump in front of a train"),
		weighted(weightIndirect,
			"don't want to be here anymore", "don't want to exist", "want to disappear",
			"tired of living", "tired of being alive", "no point in living", "no point living",
			"everyone would be better off", "won't be around much longer",
			"won't be here much longer", "sleep forever", "never wake up", "this is goodbye",
			"goodbye forever", "final goodbye", "ready to die", "wish I could die",
			"end it tonight", "can't go on living", "written a note", "wrote a note"),
	),
	CategorySelfHarm: join(
		weighted(weightStrong,
			"cut myself", "cutting myself", "cutting again", "self harm", "selfharm",
			"self harming", "self harmed", "harm myself", "harming myself",
			"burn myself", "burning myself", "burned myself"),
		weighted(weightIndirect, "hurting myself", "hitting myself", "starving myself"),
		weighted(weightWeak, "hurt myself", "hit myself"),
	),
	CategoryHarmToOthers: join(
		weighted(weightStrong, cross(
			[]string{"kill", "stab", "shoot", "strangle"}, others)...),
		weighted(weightStrong, cross(
			[]string{"going to hurt", "want to hurt"}, others)...),
		weighted(weightStrong, "homicidal", "hurt someone", "hurt somebody", "hurt people"),
		weighted(weightIndirect, "make them pay", "make him pay", "make her pay",
			"violent thoughts", "get a gun", "bring a gun"),
	),
	CategoryAbuse: join(
		weighted(weightStrong, cross(abusers, []string{
			"hit me", "hits me", "beat me", "beats me", "choked me", "chokes me",
			"strangled me", "slapped me", "slaps me", "kicked me", "punched me",
			"raped me", "attacked me", "threatened to kill me", "pushed me", "shoved me",
			"won't let me leave", "locked me in"})...),
		weighted(weightStrong, cross(abusersNow, []string{
			"hurting me", "hitting me", "beating me", "threatening me", "killing me"})...),
		// Often said in jest ("my mom is gonna kill me when she sees this"),
		// so weaker; still urgent.
		weighted(weightIndirect, cross(abusersNow, []string{"going to kill me"})...),
		weighted(weightStrong, "raped", "rape", "sexually assaulted", "sexual assault",
			"assaulted me", "being abused", "abusing me", "abused me", "abuses me",
			"he'll kill me", "she'll kill me", "he'll hurt me", "she'll hurt me"),
		weighted(weightIndirect, "afraid to go home", "scared to go home", "not safe at home",
			"don't feel safe at home", "domestic violence"),
	),
	CategoryMedical: join(
		weighted(weightStrong,
			"chest pain", "chest pains", "my chest hurts", "can't breathe", "hard to breathe",
			"trouble breathing", "struggling to breathe", "not breathing", "heart attack",
			"having a stroke", "a stroke", "seizure", "passed out", "fainted", "unconscious",
			"won't wake up", "bleeding a lot", "won't stop bleeding", "lots of blood",
			"coughing up blood", "vomiting blood", "overdose", "overdosed", "overdosing",
			"od", "oded", "i od'd", "took too many pills", "took too many", "took too much",
			"poisoned", "allergic reaction", "anaphylaxis", "throat is closing",
			"face is drooping", "numb on one side", "emergency room"),
	),
	CategoryCrisis: join(
		weighted(weightStrong,
			"can't keep myself safe", "can't stay safe", "don't feel safe", "not safe right now",
			"I'm not safe", "in danger", "I'm in immediate danger", "hearing voices", "voices telling me",
			"voices are telling me", "I'm in crisis", "in a crisis", "having a crisis",
			"mental health crisis", "emergency", "having a panic attack",
			"feel like I'm dying"),
		weighted(weightIndirect,
			"can't go on", "can't do this anymore", "can't take it anymore", "can't cope",
			"having a breakdown", "mental breakdown", "nervous breakdown", "losing control",
			"please help me", "help me please", "I need help now", "need help right now",
			"I'm dying"),
		weighted(weightWeak, "killing me"),
	),
}

// others are the people a threat of harm can name.
var others = []string{
	"him", "her", "them", "you", "someone", "somebody", "everyone", "people",
	"my husband", "my wife", "my partner", "my boyfriend", "my girlfriend", "my ex",
	"my boss", "my mom", "my dad", "my mother", "my father", "my brother", "my sister",
	"my son", "my daughter", "my kids", "my baby", "my child", "my roommate",
	"my neighbor", "my neighbour", "my coworker",
}

// abusers are who a report of abuse usually names; abusersNow the same in
// the present continuous ("he's hurting me", "my husband is hurting me").
var (
	abusers = []string{
		"he", "she", "they", "my husband", "my wife", "my partner", "my boyfriend",
		"my girlfriend", "my ex", "my dad", "my mom", "my father", "my mother",
		"my stepdad", "my stepmom", "my stepfather", "my stepmother", "my brother",
		"my sister", "my uncle", "my boss",
	}
	abusersNow = append([]string{"he's", "she's", "they're"}, suffix(abusers[3:], " is")...)
)

// idioms are figures of speech: a phrase that shares words with one does
// not count, so "this traffic is killing me" and "I'm dying to see you" stay
// routine. A longer phrase that holds a whole idiom still counts ("my
// husband is killing me" holds "is killing me").
var idioms = []string{
	"hit me up", "hits me up", "it hit me", "is killing me", "are killing me", "it's killing me", "you're killing me",
	"killing me with", "killing it", "killed it", "kill time", "killing time",
	"kill for a", "would kill for", "could kill for",
	"dying to", "to die for", "died laughing", "dying laughing", "dying of laughter",
	"dying lol", "dying lmao", "dying haha", "bored to death", "scared to death",
	"sick to death", "dead tired", "gave me a heart attack", "almost had a heart attack",
	"nearly had a heart attack", "stroke of luck", "stroke of genius",
	"not an emergency", "isn't an emergency", "no emergency", "non-emergency",
	"not really an emergency", "emergency contact", "crisis line", "crisis text line",
}

// keywordGuards wrap the urgent keyword in the ways a message says it is
// NOT urgent, or repeats our own instruction ("start a text with URGENT")
// quoted back; they are handled like idioms. %s is the keyword.
var keywordGuards = []string{
	"not %s", "non %s", "isn't %s", "nothing %s", "not that %s", "not very %s",
	"not super %s", "not really %s", "wasn't %s", "no %s",
	"text with %s", "message with %s", "subject with %s", "starts with %s",
	"start with %s",
}

// Triage classifies message text. It is immutable after NewTriage, so it is
// safe for concurrent use.
type Triage struct {
	rules   []rule
	idioms  []string // normalized and padded with spaces
	keyword string   // normalized and padded
}

type rule struct {
	match    string // normalized and padded with spaces: " kill myself "
	evidence string // as written, lower case
	category string
	weight   float64
}

// NewTriage builds a triage with the client-facing urgent keyword (e.g.
// "URGENT"; matched as a whole word anywhere, any case, except in "not
// urgent" and the like) and extra phrases per category from config (may be
// nil). It returns an error, naming every problem, for an unknown category,
// a phrase with no words in it, or an empty keyword.
func NewTriage(urgentKeyword string, extra map[string][]string) (*Triage, error) {
	var errs []error
	t := &Triage{}

	kw := normalize(urgentKeyword)
	if kw == "" {
		errs = append(errs, errors.New("triage: the urgent keyword is empty; clients are told to start urgent messages with it, e.g. URGENT"))
	} else {
		t.keyword = " " + kw + " "
		for _, g := range keywordGuards {
			t.idioms = append(t.idioms, " "+normalize(fmt.Sprintf(g, kw))+" ")
		}
	}
	for _, s := range idioms {
		t.idioms = append(t.idioms, " "+normalize(s)+" ")
	}

	seen := map[[2]string]bool{}
	add := func(category, text string, weight float64) bool {
		n := normalize(text)
		if n == "" {
			return false
		}
		if key := [2]string{category, n}; !seen[key] {
			seen[key] = true
			t.rules = append(t.rules, rule{" " + n + " ", strings.ToLower(strings.TrimSpace(text)), category, weight})
		}
		return true
	}
	for _, c := range categories {
		for _, p := range builtin[c] {
			add(c, p.text, p.weight)
		}
	}
	for _, c := range slices.Sorted(maps.Keys(extra)) {
		if !slices.Contains(categories, c) {
			errs = append(errs, fmt.Errorf("triage: extra phrases for %q: unknown category; the categories are %s", c, strings.Join(categories, ", ")))
			continue
		}
		for i, p := range extra[c] {
			if !add(c, p, weightExtra) {
				errs = append(errs, fmt.Errorf("triage: extra phrases for %q [%d]: %q has no words to match", c, i, p))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// Classify reads the subject and body (pass "" subject for SMS). Lines
// quoting an earlier message (starting with ">") are skipped: they repeat
// what was already triaged, including our own acknowledgement. Any match
// makes the verdict urgent: a missed unsafe message is the worst failure,
// so doubt counts as urgent. Well-known figures of speech ("this traffic
// is killing me", "dying to", "not urgent") do not count.
func (t *Triage) Classify(subject, body string) Verdict {
	text := " " + normalize(subject) + " " + blank + " " + normalize(unquote(body)) + " "

	// Where the idioms (and keyword guards) occur in the text.
	var figures [][2]int
	for _, id := range t.idioms {
		for off := 0; ; {
			i := strings.Index(text[off:], id)
			if i < 0 {
				break
			}
			figures = append(figures, [2]int{off + i, off + i + len(id)})
			off += i + 1
		}
	}
	// A match is figurative when it shares words with an idiom without
	// holding all of it: "killing me" in "traffic is killing me", "I'm
	// dying" in "I'm dying to tell you". Spans are padded with a space on
	// each side, so neighbours share one; compare the words only.
	figurative := func(start, end int) bool {
		hs, he := start+1, end-1
		return slices.ContainsFunc(figures, func(f [2]int) bool {
			fs, fe := f[0]+1, f[1]-1
			return hs < fe && fs < he && !(hs <= fs && fe <= he)
		})
	}

	type hit struct {
		start, end int
		rule       rule
		weight     float64
	}
	var hits []hit
	find := func(r rule) {
		best, first := 0.0, -1
		for off := 0; ; {
			i := strings.Index(text[off:], r.match)
			if i < 0 {
				break
			}
			i += off
			off = i + 1
			if figurative(i, i+len(r.match)) {
				continue
			}
			w := r.weight
			if negated(text[:i]) {
				w *= negatedFactor
			}
			if first < 0 {
				first = i
			}
			best = max(best, w)
		}
		if first >= 0 {
			hits = append(hits, hit{first, first + len(r.match), r, best})
		}
	}
	for _, r := range t.rules {
		find(r)
	}
	if t.keyword != "" {
		find(rule{t.keyword, strings.TrimSpace(t.keyword), CategoryMarkedUrgent, weightKeyword})
	}
	if len(hits) == 0 {
		return Verdict{}
	}

	// Drop a hit inside a longer one ("unalive" within "unalive myself"),
	// then order the rest as they appear in the message.
	slices.SortStableFunc(hits, func(a, b hit) int { return cmp.Compare(b.end-b.start, a.end-a.start) })
	var kept []hit
	for _, h := range hits {
		if !slices.ContainsFunc(kept, func(k hit) bool { return k.start <= h.start && h.end <= k.end }) {
			kept = append(kept, h)
		}
	}
	slices.SortStableFunc(kept, func(a, b hit) int { return cmp.Compare(a.start, b.start) })

	v := Verdict{Urgent: true}
	rank := len(categories)
	for _, h := range kept {
		if !slices.Contains(v.Evidence, h.rule.evidence) {
			v.Evidence = append(v.Evidence, h.rule.evidence)
		}
		if r := slices.Index(categories, h.rule.category); r < rank {
			rank = r
		}
	}
	v.Category = categories[rank]
	miss := 1.0 // noisy-or over the evidence for the chosen category
	for _, h := range kept {
		if h.rule.category == v.Category {
			miss *= 1 - h.weight
		}
	}
	v.Confidence = 1 - miss
	return v
}

// negated reports whether one of the last few tokens of before is a
// negation.
func negated(before string) bool {
	f := strings.Fields(before)
	for i := len(f) - 1; i >= 0 && i >= len(f)-negationWindow; i-- {
		if f[i] == blank {
			return false
		}
		if negations[f[i]] {
			return true
		}
	}
	return false
}

// unquote drops quoted lines (">") and "On ... wrote:" attributions.
func unquote(body string) string {
	if !strings.Contains(body, ">") {
		return body
	}
	lines := strings.Split(body, "\n")
	out := lines[:0]
	for _, l := range lines {
		s := strings.TrimSpace(l)
		if strings.HasPrefix(s, ">") || (strings.HasPrefix(s, "On ") && strings.HasSuffix(s, "wrote:")) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// leet maps the digits and symbols used for letters. It applies only inside
// words that also have letters, so "k1ll" reads "kill" but "988" stays.
var leet = map[rune]rune{'0': 'o', '1': 'i', '3': 'e', '4': 'a', '5': 's', '@': 'a', '$': 's'}

// contractions join common two-word forms into one token, so phrases match
// however they are written: "can not", "cannot" and "can't" all read "cant".
var (
	singles = map[string]string{"cannot": "cant", "u": "you", "gonna": "going", "wanna": "want"}
	pairs   = map[[2]string]string{
		{"can", "not"}: "cant", {"do", "not"}: "dont", {"does", "not"}: "doesnt",
		{"did", "not"}: "didnt", {"will", "not"}: "wont", {"is", "not"}: "isnt",
		{"was", "not"}: "wasnt", {"i", "am"}: "im", {"he", "is"}: "hes",
		{"she", "is"}: "shes", {"it", "is"}: "its", {"you", "are"}: "youre",
		{"they", "are"}: "theyre", {"my", "self"}: "myself", {"non", "emergency"}: "nonemergency",
	}
)

// normalize lower-cases s, reads simple leetspeak, drops apostrophes, turns
// every other run of non-letters into one space, and joins contractions.
// "I'm gonna K1LL my$elf!!" becomes "im going to kill myself".
func normalize(s string) string {
	var tokens []string
	var word []rune
	flush := func() {
		if len(word) == 0 {
			return
		}
		letters := slices.ContainsFunc(word, unicode.IsLetter)
		var b strings.Builder
		for _, r := range word {
			if m, ok := leet[r]; ok && letters {
				r = m
			}
			if r == '@' || r == '$' {
				continue
			}
			b.WriteRune(r)
		}
		if b.Len() > 0 {
			tokens = append(tokens, b.String())
		}
		word = word[:0]
	}
	for _, r := range strings.ToLower(s) {
		switch {
		case r == '\'' || r == '’' || r == '‘' || r == 'ʼ' || r == '`':
			// "don't" → "dont"
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '@' || r == '$':
			word = append(word, r)
		default:
			flush()
		}
	}
	flush()

	out := make([]string, 0, len(tokens))
	for i := 0; i < len(tokens); i++ {
		tok := tokens[i]
		if s, ok := singles[tok]; ok {
			tok = s
			if s == "going" || s == "want" { // gonna, wanna
				out = append(out, tok, "to")
				continue
			}
		}
		if i+1 < len(tokens) {
			if j, ok := pairs[[2]string{tok, tokens[i+1]}]; ok {
				out = append(out, j)
				i++
				continue
			}
		}
		out = append(out, tok)
	}
	return strings.Join(out, " ")
}

func weighted(w float64, texts ...string) []phrase {
	ps := make([]phrase, len(texts))
	for i, s := range texts {
		ps[i] = phrase{s, w}
	}
	return ps
}

func join(lists ...[]phrase) []phrase { return slices.Concat(lists...) }

// cross returns every a + " " + b.
func cross(as, bs []string) []string {
	var out []string
	for _, a := range as {
		for _, b := range bs {
			out = append(out, a+" "+b)
		}
	}
	return out
}

func suffix(ss []string, s string) []string {
	out := make([]string, len(ss))
	for i, x := range ss {
		out[i] = x + s
	}
	return out
}
