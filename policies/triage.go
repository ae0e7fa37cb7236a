package policies

import (
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
)

// Verdict is what Triage makes of a message. The gateway forwards an urgent
// message to the on-call clinician with Category and Evidence as the reason.
//
// Evidence quotes words from the client's message: treat it as client
// content (never log it).
type Verdict struct {
	Urgent     bool
	Category   string   // "" when routine; else one of the Category* constants
	Evidence   []string // the client's words that decided it, lower case, in message order
	Confidence float64  // 0..1: how strongly the evidence points to Category; 0 when routine
}

// The triage categories. When a message matches several about equally,
// Verdict.Category is the first in this order of precedence: suicide,
// medical-emergency, harm-to-others, abuse, self-harm, acute-crisis; the
// client's own urgent keyword counts only when nothing else does.
const (
	CategorySuicide      = "suicide"
	CategorySelfHarm     = "self-harm"
	CategoryHarmToOthers = "harm-to-others"
	CategoryAbuse        = "abuse"
	CategoryMedical      = "medical-emergency"
	CategoryCrisis       = "acute-crisis"
	CategoryMarkedUrgent = "client-marked-urgent"
)

// Defaults for the lexicon's settings.
const (
	defaultThreshold      = 0.5  // a category at least this strong is urgent
	defaultNegationFactor = 0.5  // "I'm not suicidal" counts at half weight
	defaultNegationWindow = 3    // words before a match searched for a negation
	defaultMentionFactor  = 0.4  // a single word in quotes ("'kms' is our group chat's word") is talked about, not said
	defaultPrecedenceGap  = 0.15 // a category this close to the strongest wins if it comes first
	defaultCrossThreshold = 0.6  // hints of several categories together this strong are urgent too
	weightExtra           = 0.8  // phrases the practice added in config ([triage.extra])
)

// Triage classifies message text against a lexicon of rules. It is
// immutable after NewTriage, so it is safe for concurrent use.
type Triage struct {
	lx    *lexicon
	model *model
	pool  sync.Pool // *scratch
}

// NewTriage builds a triage from the built-in lexicon (lexicon.txt, whose
// header documents the format), the client-facing urgent keyword (e.g.
// "URGENT": matched as a whole word anywhere, any case, except in "not
// urgent" and the like), extra phrases per category from config (may be
// nil) and extra lexicon files' contents in the same format as the
// built-in one. It returns every problem found, joined; a problem in a
// lexicon is a *LexiconError naming the file and line.
func NewTriage(urgentKeyword string, extra map[string][]string, lexicons ...[]byte) (*Triage, error) {
	var errs []error
	kw := normalize(urgentKeyword)
	switch {
	case kw == "":
		errs = append(errs, errors.New("triage: the urgent keyword is empty; clients are told to start urgent messages with it, e.g. URGENT"))
	case strings.Contains(kw, " "):
		errs = append(errs, errors.New("triage: the urgent keyword must be one word, e.g. URGENT"))
	}
	l := newLexicon(kw)
	errs = append(errs, l.parse(builtinLexicon, 0)...)
	for i, b := range lexicons {
		errs = append(errs, l.parse(b, i+1)...)
	}
	errs = append(errs, l.compile(extra)...)
	m, err := loadModel()
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	t := &Triage{lx: l, model: m}
	t.pool.New = func() any { return newScratch(l) }
	return t, nil
}

func newLexicon(keyword string) *lexicon {
	return &lexicon{
		sets: map[string]*wordSet{}, rawSets: map[string]*rawSet{}, aliases: map[string][]alias{},
		vocab: map[string]bool{}, fuzzy: map[string]string{}, negations: map[string]bool{},
		through: map[string]bool{}, fillers: map[string]bool{}, translate: map[string][]string{}, keyword: keyword,
		threshold: defaultThreshold, negationFactor: defaultNegationFactor,
		negationWindow: defaultNegationWindow, mentionFactor: defaultMentionFactor,
		precedenceGap: defaultPrecedenceGap, crossThreshold: defaultCrossThreshold,
		modelThreshold: defaultModelThreshold,
	}
}

// Classify reads the subject and body (pass "" subject for SMS). Lines
// quoting an earlier message (starting with ">") are skipped: they repeat
// what was already triaged, including our own acknowledgement. Every
// sentence is read, so one risky sentence in a long email is enough.
func (t *Triage) Classify(subject, body string) Verdict {
	v, _ := t.run(subject, body, false)
	return v
}

// hit is one rule's best match in a message.
type hit struct {
	rule       int32
	weight     float64
	start, end int32      // tokens
	spans      [][2]int32 // the matched patterns, for evidence
}

// classify is Classify that also returns the rules that matched, for the
// lexicon's tests.
func (t *Triage) classify(subject, body string) (Verdict, []hit) {
	return t.run(subject, body, true)
}

// run classifies with a pooled scratch; the hits are returned (copied out
// of the scratch) only when asked for.
func (t *Triage) run(subject, body string, keepHits bool) (Verdict, []hit) {
	sc := t.pool.Get().(*scratch)
	defer t.pool.Put(sc)
	body = unquote(body)
	toks := sc.tokens(subject, body)
	hits := sc.match(toks)
	v := t.lx.decide(hits, func(h *hit) []string { return evidence(toks, h, subject, body) })
	if !v.Urgent && t.lx.modelThreshold < 1 && len(toks) >= modelMinWords {
		sc.hashes = features(toks, sc.hashes[:0])
		v = t.model.judge(sc.hashes, t.lx.modelThreshold)
		if !v.Urgent {
			windows(toks, func(w []token) bool {
				if len(w) < modelMinWords {
					return false
				}
				sc.hashes = features(w, sc.hashes[:0])
				v = t.model.judge(sc.hashes, max(windowThreshold, t.lx.modelThreshold))
				return v.Urgent
			})
		}
	}
	if !keepHits {
		return v, nil
	}
	return v, slices.Clone(hits)
}

// decide scores the hits per category and picks the verdict.
func (l *lexicon) decide(hits []hit, quote func(*hit) []string) Verdict {
	if len(hits) == 0 {
		return Verdict{}
	}
	score := map[string]float64{}
	for _, h := range hits {
		c := l.rules[h.rule].category
		score[c] = 1 - (1-score[c])*(1-h.weight)
	}
	top := 0.0
	for c, s := range score {
		if c != CategoryMarkedUrgent {
			top = max(top, s)
		}
	}
	cat := ""
	for _, c := range categories {
		s := score[c]
		if s >= l.threshold && (c == CategoryMarkedUrgent || s >= top-l.precedenceGap) {
			cat = c
			break
		}
	}
	conf := score[cat]
	if cat == "" {
		// Hints of different kinds ("he's drunk again", "I'm scared") add
		// up too, under the strongest kind.
		all := 0.0
		for c, s := range score {
			if c != CategoryMarkedUrgent {
				all = 1 - (1-all)*(1-s)
			}
		}
		if all >= l.crossThreshold {
			for _, c := range categories {
				if score[c] == top {
					cat, conf = c, all
					break
				}
			}
		}
	}
	if cat == "" {
		return Verdict{}
	}
	v := Verdict{Urgent: true, Category: cat, Confidence: math.Round(min(conf, 1)*100) / 100}
	slices.SortStableFunc(hits, func(a, b hit) int { return int(a.start - b.start) })
	shown := func(h *hit) bool {
		c := l.rules[h.rule].category
		return c == cat || score[c] >= l.threshold || (conf > score[cat] && c != CategoryMarkedUrgent)
	}
	for i := range hits {
		h := &hits[i]
		if !shown(h) {
			continue
		}
		// A match inside a longer one adds nothing to read.
		inside := slices.ContainsFunc(hits, func(o hit) bool {
			return shown(&o) && o.start <= h.start && h.end <= o.end && o.end-o.start > h.end-h.start
		})
		if inside {
			continue
		}
		for _, e := range quote(h) {
			if !slices.Contains(v.Evidence, e) {
				v.Evidence = append(v.Evidence, e)
			}
		}
	}
	return v
}

// evidence quotes a hit from the source: the client's words, lower case,
// spaces collapsed. Patterns far apart are quoted one by one.
func evidence(toks []token, h *hit, subject, body string) []string {
	quote := func(s, e int32) string {
		a, b := toks[s].start, toks[e-1].end
		var text string
		if off := int32(len(subject)) + 1; a >= off {
			text = body[a-off : b-off]
		} else {
			text = subject[a:min(b, int32(len(subject)))]
		}
		return strings.Join(strings.Fields(strings.ToLower(text)), " ")
	}
	if h.end-h.start <= 8 || len(h.spans) < 2 {
		return []string{quote(h.start, h.end)}
	}
	out := make([]string, 0, len(h.spans))
	for _, s := range h.spans {
		out = append(out, quote(s[0], s[1]))
	}
	return out
}

// scratch is one Classify call's working memory, reused through a pool.
type scratch struct {
	lx       *lexicon
	hashes   []uint64 // the message's features, for the model
	z        tokenizer
	gen      uint32
	triedGen []uint32 // per part: the call that last tried it
	triedPos []int32  // per part: where
	head     []int32  // per part: first occurrence + 1
	occ      []occurrence
	touched  []int32 // parts with occurrences
	condGen  []uint32
	best     []int32 // per rule: index into hits + 1
	hits     []hit
	bag      []uint64 // the message's words, by number
	okGen    []uint32 // per part: the call that last checked its words against the bag
	okVal    []bool
	sentLo   []int32 // per sentence: its first token
	sentHi   []int32 // per sentence: after its last token
}

// occurrence is one place a part matched.
type occurrence struct {
	start, end int32
	next       int32  // next occurrence of the same part + 1
	mask       uint64 // words the pattern named, from start; the rest were gaps
	negated    bool
}

func newScratch(l *lexicon) *scratch {
	return &scratch{lx: l, z: tokenizer{lx: l},
		triedGen: make([]uint32, len(l.parts)), triedPos: make([]int32, len(l.parts)),
		head: make([]int32, len(l.parts)), condGen: make([]uint32, len(l.conds)),
		best: make([]int32, len(l.rules)), bag: make([]uint64, (len(l.ids)+64)/64),
		okGen: make([]uint32, len(l.parts)), okVal: make([]bool, len(l.parts)),
	}
}

func (sc *scratch) tokens(subject, body string) []token {
	z := &sc.z
	z.buf, z.raw = z.buf[:0], z.raw[:0]
	z.sent, z.clause = 0, 0
	z.part = 0
	z.tokenize(subject, 0)
	z.part = 1
	z.tokenize(body, int32(len(subject))+1)
	return z.finish()
}

// match finds every rule's best hit.
func (sc *scratch) match(toks []token) []hit {
	l := sc.lx
	sc.gen++
	if sc.gen == 0 { // wrapped: forget everything
		clear(sc.triedGen)
		clear(sc.condGen)
		clear(sc.okGen)
		sc.gen = 1
	}
	clear(sc.bag)
	sc.sentLo, sc.sentHi = sc.sentLo[:0], sc.sentHi[:0]
	for p := range toks {
		t := &toks[p]
		sc.bag[t.id>>6] |= 1 << (t.id & 63)
		for int(t.sent) >= len(sc.sentLo) {
			sc.sentLo, sc.sentHi = append(sc.sentLo, int32(p)), append(sc.sentHi, int32(p))
		}
		sc.sentHi[t.sent] = int32(p + 1)
	}
	sc.bag[0] &^= 1 // word 0 is every unknown word
	for _, id := range sc.touched {
		sc.head[id] = 0
	}
	sc.touched, sc.occ, sc.hits = sc.touched[:0], sc.occ[:0], sc.hits[:0]
	m := matcher{toks: toks, fill: l.fillBits}
	try := func(ids []int32, p int) {
		for _, id := range ids {
			if sc.triedGen[id] == sc.gen && sc.triedPos[id] == int32(p) {
				continue
			}
			sc.triedGen[id], sc.triedPos[id] = sc.gen, int32(p)
			if !sc.partOK(id) {
				continue
			}
			end, mask := m.seq(l.parts[id].elems, 0, p, toks[p].sent, p, 0)
			if end > p {
				sc.record(id, int32(p), int32(end), mask)
			}
		}
	}
	for p := range toks {
		t := &toks[p]
		if t.id > 0 {
			try(l.byID[t.id], p)
		} else if len(t.text) >= 3 {
			for _, r := range l.byPrefix[[3]byte{t.text[0], t.text[1], t.text[2]}] {
				if strings.HasPrefix(t.text, r.prefix) {
					try([]int32{r.part}, p)
				}
			}
		}
		switch t.kind {
		case kindNum:
			try(l.numIndex, p)
		case kindDose:
			try(l.doseIndex, p)
		}
	}
	if len(sc.touched) == 0 {
		return nil
	}
	// Negations, now that every negation exception is known.
	for i := range sc.occ {
		sc.occ[i].negated = sc.negated(toks, &sc.occ[i])
	}
	for _, id := range sc.touched {
		for _, ci := range l.partConds[id] {
			if sc.condGen[ci] == sc.gen {
				continue
			}
			sc.condGen[ci] = sc.gen
			sc.evalCond(toks, ci)
		}
	}
	for _, h := range sc.hits {
		sc.best[h.rule] = 0
	}
	return sc.hits
}

// partOK reports whether the message holds a word of every family part
// id needs; a part that fails cannot match anywhere in it.
func (sc *scratch) partOK(id int32) bool {
	if sc.okGen[id] == sc.gen {
		return sc.okVal[id]
	}
	ok := true
	for _, s := range sc.lx.parts[id].need {
		if !s.in(sc.bag) {
			ok = false
			break
		}
	}
	sc.okGen[id], sc.okVal[id] = sc.gen, ok
	return ok
}

// record notes an occurrence of part id; the mask marks the words the
// pattern named (not gaps), so a negation inside a gap still counts.
func (sc *scratch) record(id, start, end int32, mask uint64) {
	n := 0
	for o := sc.head[id]; o != 0; o = sc.occ[o-1].next {
		n++
	}
	if n >= maxOccurrences {
		return
	}
	if sc.head[id] == 0 {
		sc.touched = append(sc.touched, id)
	}
	sc.occ = append(sc.occ, occurrence{start: start, end: end, next: sc.head[id], mask: mask})
	sc.head[id] = int32(len(sc.occ))
}

// negated reports whether a negation governs an occurrence: one of the few
// words before it in the same clause ("not", "never", "no"), reaching it
// only across words like "going to" or "really", or one inside it that
// the pattern did not name. "dont worry" and the like are no negation.
func (sc *scratch) negated(toks []token, o *occurrence) bool {
	l := sc.lx
	s := o.start
	for q := s - 1; q >= 0 && q >= s-int32(l.negationWindow); q-- {
		if toks[q].sent != toks[s].sent || toks[q].clause != toks[s].clause {
			break
		}
		if l.negBits[toks[q].id] && !sc.excepted(toks, q) {
			return true
		}
		if !l.thruBits[toks[q].id] {
			break
		}
	}
	for q := s + 1; q < o.end; q++ {
		if d := q - s; d < 64 && o.mask&(1<<d) != 0 {
			continue
		}
		if l.negBits[toks[q].id] && toks[q].clause == toks[s].clause && !sc.excepted(toks, q) {
			return true
		}
	}
	return false
}
