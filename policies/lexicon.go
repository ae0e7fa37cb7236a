package policies

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// builtinLexicon is the triage's own lexicon; its header documents the
// format. Config can add files in the same format.
//
//go:embed lexicon.txt
var builtinLexicon []byte

// LexiconError is one problem in a lexicon file: which file (0 the
// built-in one, 1 the first extra one passed to NewTriage), the line, and
// what to do about it.
type LexiconError struct {
	Lexicon int
	Line    int
	Msg     string
}

func (e *LexiconError) Error() string {
	name := "built-in lexicon"
	if e.Lexicon > 0 {
		name = fmt.Sprintf("extra lexicon %d", e.Lexicon)
	}
	if e.Line == 0 {
		return fmt.Sprintf("triage: %s: %s", name, e.Msg)
	}
	return fmt.Sprintf("triage: %s line %d: %s", name, e.Line, e.Msg)
}

// Limits that keep matching fast whatever a lexicon says.
const (
	maxGap         = 12 // longest "..N" gap, in words
	maxNear        = 30 // largest "near N"
	maxElems       = 24 // elements in one pattern
	maxOccurrences = 16 // occurrences of one pattern kept per message
	minFuzzyLen    = 5  // shortest word that matches with a typo
)

// Categories a rule may name, and their order of precedence when two are
// about as strong.
var categories = []string{
	CategorySuicide, CategoryMedical, CategoryHarmToOthers, CategoryAbuse,
	CategorySelfHarm, CategoryCrisis, CategoryMarkedUrgent,
}

// src is where a line of a lexicon came from.
type src struct{ lexicon, line int }

func (s src) errorf(format string, args ...any) *LexiconError {
	return &LexiconError{Lexicon: s.lexicon, Line: s.line, Msg: fmt.Sprintf(format, args...)}
}

// The parsed, not yet compiled, lexicon.
type (
	rawSet struct {
		name  string
		items []rawItem
		at    src
	}
	rawItem struct {
		pattern string
		at      src
	}
	rawCond struct {
		kind     condKind
		n        int
		patterns []string
		at       src
	}
	rawUnless struct {
		n       int // words between the hit and the pattern; -1: same sentence
		pattern string
		at      src
	}
	rawRule struct {
		name, category string
		weight         float64
		conds          []rawCond
		unless         []rawUnless
		examples, nots []rawItem
		idiom          bool // an idiom: one pattern, no category
		at             src
	}
)

type condKind uint8

const (
	condMatch    condKind = iota // the pattern, words in order
	condNear                     // all patterns within n words, any order
	condWith                     // all patterns in the same sentence
	condAnywhere                 // all patterns in the same message part
)

// lexicon is a compiled lexicon: word families, rewrites and rules, with
// an index from a message word to the patterns that can start there.
type lexicon struct {
	sets      map[string]*wordSet
	rawSets   map[string]*rawSet
	setOrder  []string
	aliases   map[string][]alias // first word → rewrites, longest first
	vocab     map[string]bool    // every word the lexicon knows
	ids       map[string]int32   // vocab word → its number (from 1); 0 is an unknown word
	allSets   []*wordSet         // every family and alternative, to finish once vocab is known
	byID      [][]int32          // word number → parts that can start with it
	byPrefix  map[[3]byte][]prefixRef
	negBits   []bool // by word number: a negation
	fillBits  []bool // by word number: a filler ("just", "really") patterns step over
	fillers   map[string]bool
	thruBits  []bool            // by word number: a word a negation reaches across
	fuzzy     map[string]string // a fuzzy word or one of its one-letter deletions → the word
	fuzzyLen  [2]int            // shortest and longest fuzzy word
	negations map[string]bool
	through   map[string]bool // words a negation reaches across: "not going to"
	translate map[string][]string
	keyword   string

	threshold      float64
	negationFactor float64
	negationWindow int
	mentionFactor  float64
	precedenceGap  float64
	crossThreshold float64
	modelThreshold float64 // 1: the model never decides

	parts      []part
	partConds  [][]int32 // per part: the conditions that use it
	prefixList []string  // every prefix a pattern names
	numIndex   []int32   // parts starting with {num}
	doseIndex  []int32   // parts starting with {dose}
	rules      []*rule
	conds      []cond
	idioms     []int32 // parts
	idiomRules []*rule // idioms with their examples, for the tests
	negExcept  []int32 // parts: "dont worry" is no negation
	rawRules   []*rawRule
}

// part is one pattern as it is matched: a condition's pattern, an unless,
// an idiom or a negation exception.
type part struct {
	elems []elem
	text  string
	cond  bool       // a condition's pattern: found by the index; the rest are matched on demand
	need  []*wordSet // families of which the message must hold a word for the part to match
}

type cond struct {
	rule  int32
	kind  condKind
	n     int
	parts []int32
}

type unlessRef struct {
	part int32
	n    int
}

// rule is a compiled rule.
type rule struct {
	name, category string
	weight         float64
	conds          []int32
	unless         []unlessRef
	examples, nots []string
	at             src
}

// prefixRef is a part whose first word is a prefix, for words the
// lexicon does not know ("stockpiling" for "stockpil*").
type prefixRef struct {
	prefix string
	part   int32
}

type alias struct {
	from []string
	to   []string
}

// elem is one element of a pattern.
type elem struct {
	kind elemKind
	opt  bool
	max  int      // elGap: most words skipped; elNum: least value
	set  *wordSet // elSet
}

type elemKind uint8

const (
	elSet  elemKind = iota // a word, a prefix, alternatives or @family
	elGap                  // ..N
	elAny                  // _
	elNum                  // {num}
	elDose                 // {dose}
)

// wordSet is a family of words and phrases: single words in a map (and,
// once compiled, a bitset by word number that also holds every known word
// a prefix covers), prefixes ("kill*") in a list, longer items as
// patterns.
type wordSet struct {
	words          map[string]bool
	prefixes       []string
	seqs           [][]elem
	bits           []uint64  // large families: a bit per word number
	ids            []int32   // small families instead: their word numbers, sorted
	nbits          int       // len of a bitset over the vocabulary
	phraseNeed     [][]int32 // per phrase: the plain words it needs
	alwaysPossible bool      // a phrase needs no particular word
}

// in reports whether the message's bag of words makes some item of the
// family possible: one of its words, or every word a phrase names. A
// family with prefixes is never tested this way (unknown words may match).
func (s *wordSet) in(bag []uint64) bool {
	if s.bits == nil {
		for _, id := range s.ids {
			if bag[id>>6]&(1<<(id&63)) != 0 {
				return true
			}
		}
	} else {
		for i, b := range s.bits {
			if b&bag[i] != 0 {
				return true
			}
		}
	}
	for _, need := range s.phraseNeed {
		all := true
		for _, id := range need {
			if bag[id>>6]&(1<<(id&63)) == 0 {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// literalID is the word number of an element that is one plain word.
func literalID(e elem, ids map[string]int32) (int32, bool) {
	if e.kind != elSet || e.opt || len(e.set.prefixes) > 0 || len(e.set.seqs) > 0 || len(e.set.words) != 1 {
		return 0, false
	}
	for w := range e.set.words {
		return ids[w], true
	}
	return 0, false
}

// needPhrases records, for each phrase of the family, the plain words it
// cannot match without. A phrase with none makes the family always
// possible.
func (s *wordSet) needPhrases(ids map[string]int32) {
	for _, sq := range s.seqs {
		var need []int32
		for _, e := range sq {
			if id, ok := literalID(e, ids); ok {
				need = append(need, id)
			}
		}
		if len(need) == 0 {
			s.phraseNeed = nil
			s.alwaysPossible = true
			return
		}
		s.phraseNeed = append(s.phraseNeed, need)
	}
}

// bitset returns the family's single words as a bitset, whichever way
// they are kept.
func (s *wordSet) bitset() []uint64 {
	if s.bits != nil {
		return slices.Clone(s.bits)
	}
	f := make([]uint64, s.nbits)
	for _, id := range s.ids {
		f[id>>6] |= 1 << (id & 63)
	}
	return f
}

// smallSet is the most words a family holds as a list rather than a
// bitset: a short list stays in one cache line, thousands of bitsets over
// the whole vocabulary do not.
const smallSet = 16

// has reports whether the token is one of the family's single words.
func (s *wordSet) has(t *token) bool {
	if t.id > 0 {
		if s.bits == nil {
			for _, id := range s.ids {
				if id >= t.id {
					return id == t.id
				}
			}
			return false
		}
		return s.bits[t.id>>6]&(1<<(t.id&63)) != 0
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(t.text, p) {
			return true
		}
	}
	return false
}

// parseLexicon reads one lexicon file into l's raw rules and sets.
func (l *lexicon) parse(data []byte, index int) []error {
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var cur *rawRule
	line := 0
	for sc.Scan() {
		line++
		at := src{index, line}
		text := sc.Text()
		s := stripComment(text)
		if strings.TrimSpace(s) == "" {
			continue
		}
		indented := s[0] == ' ' || s[0] == '\t'
		s = strings.TrimSpace(s)
		key, rest, _ := strings.Cut(s, " ")
		rest = strings.TrimSpace(rest)
		if indented {
			if cur == nil {
				errs = append(errs, at.errorf("%q is indented but belongs to no rule or idiom; start it at the line's beginning or put it under a \"rule\" line", s))
				continue
			}
			if err := l.parseClause(cur, s, at); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		cur = nil
		var err error
		switch key {
		case "set":
			err = l.parseSet(rest, at)
		case "alias":
			err = l.parseAlias(rest, at)
		case "fuzzy":
			var short error
			err = l.parseWords(rest, at, func(w string) {
				if len(w) < minFuzzyLen {
					short = at.errorf("fuzzy word %q is shorter than %d letters; a typo in it would match too much, write the misspelling as an alias instead", w, minFuzzyLen)
				}
				l.addFuzzy(w)
			})
			if err == nil {
				err = short
			}
		case "negation":
			err = l.parseWords(rest, at, func(w string) { l.negations[w] = true })
		case "negation-through":
			err = l.parseWords(rest, at, func(w string) { l.through[w] = true })
		case "filler":
			err = l.parseWords(rest, at, func(w string) { l.fillers[w] = true })
		case "negation-except":
			cur = &rawRule{name: "negation-except", at: at, idiom: true}
			cur.conds = append(cur.conds, rawCond{kind: condMatch, patterns: []string{rest}, at: at})
			l.rawRules = append(l.rawRules, cur)
			cur.category = "negation-except"
		case "translate":
			from, to, ok := strings.Cut(rest, "=")
			if !ok {
				err = at.errorf("translate needs \"=\": write \"translate urgent = urgente\"")
				break
			}
			k := normalize(from)
			err = l.parseWords(to, at, func(w string) { l.translate[k] = append(l.translate[k], w) })
		case "setting":
			err = l.parseSetting(rest, at)
		case "idiom":
			cur = &rawRule{name: "idiom " + rest, at: at, idiom: true}
			cur.conds = append(cur.conds, rawCond{kind: condMatch, patterns: []string{rest}, at: at})
			l.rawRules = append(l.rawRules, cur)
		case "rule":
			cur, err = parseRuleHead(rest, at)
			if cur != nil {
				l.rawRules = append(l.rawRules, cur)
			}
		default:
			err = at.errorf("unknown directive %q; a line starts with set, alias, fuzzy, filler, negation, negation-through, negation-except, translate, setting, idiom or rule (see the top of the built-in lexicon)", key)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, src{index, line + 1}.errorf("%v", err))
	}
	return errs
}

// stripComment drops a comment: a line starting with "#", or " #" after
// text. A "#" inside a word stays ("#selfharm" is read as "selfharm").
func stripComment(s string) string {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "#") {
		return ""
	}
	if i := strings.Index(s, " #"); i >= 0 {
		if j := i + 2; j == len(s) || s[j] == ' ' {
			return s[:i]
		}
	}
	return s
}

func (l *lexicon) parseWords(s string, at src, add func(string)) error {
	n := 0
	for f := range strings.FieldsSeq(s) {
		w := normalize(f)
		if w == "" || strings.Contains(w, " ") {
			return at.errorf("%q is not one word; write words separated by spaces", f)
		}
		add(w)
		n++
	}
	if n == 0 {
		return at.errorf("no words given")
	}
	return nil
}

func (l *lexicon) parseSet(s string, at src) error {
	name, items, ok := strings.Cut(s, "=")
	add := false
	if ok && strings.HasSuffix(name, "+") {
		add = true
		name = strings.TrimSuffix(name, "+")
	}
	name = strings.TrimSpace(name)
	if !ok || !validName(name) {
		return at.errorf("write a family as \"set name = word | two words | prefix*\" (or \"set name += ...\" to add to one); names are lower-case letters, digits, - and _")
	}
	rs := l.rawSets[name]
	switch {
	case rs != nil && !add:
		return at.errorf("family @%s is already defined (line %d of %s); use \"set %s += ...\" to add to it", name, rs.at.line, lexiconName(rs.at.lexicon), name)
	case rs == nil && add:
		return at.errorf("family @%s is not defined yet; use \"set %s = ...\" to define it", name, name)
	case rs == nil:
		rs = &rawSet{name: name, at: at}
		l.rawSets[name] = rs
		l.setOrder = append(l.setOrder, name)
	}
	for _, item := range splitItems(items) {
		item = strings.TrimSpace(item)
		if item == "" {
			return at.errorf("an empty item in family @%s; remove the extra \"|\"", name)
		}
		rs.items = append(rs.items, rawItem{item, at})
	}
	return nil
}

// splitItems splits a family's items at "|" outside parentheses.
func splitItems(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case '|':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func lexiconName(i int) string {
	if i == 0 {
		return "the built-in lexicon"
	}
	return fmt.Sprintf("extra lexicon %d", i)
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (l *lexicon) parseAlias(s string, at src) error {
	from, to, ok := strings.Cut(s, "=")
	f, t := strings.Fields(normalize(from)), strings.Fields(normalize(to))
	if !ok || len(f) == 0 || len(t) == 0 {
		return at.errorf("write an alias as \"alias gonna = going to\": the words as clients write them, \"=\", the words the rules use")
	}
	l.aliases[f[0]] = append(l.aliases[f[0]], alias{from: f, to: t})
	for _, w := range f {
		l.vocab[w] = true
	}
	for _, w := range t {
		l.vocab[w] = true
	}
	return nil
}

func (l *lexicon) parseSetting(s string, at src) error {
	name, val, _ := strings.Cut(s, " ")
	v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
	if err != nil {
		return at.errorf("setting %s: %q is not a number", name, strings.TrimSpace(val))
	}
	in01 := func(p *float64) error {
		if v <= 0 || v > 1 {
			return at.errorf("setting %s: %v is out of range; write a number above 0 and at most 1", name, v)
		}
		*p = v
		return nil
	}
	switch name {
	case "threshold":
		return in01(&l.threshold)
	case "negation-factor":
		return in01(&l.negationFactor)
	case "mention-factor":
		return in01(&l.mentionFactor)
	case "cross-threshold":
		return in01(&l.crossThreshold)
	case "model-threshold":
		return in01(&l.modelThreshold)
	case "precedence-gap":
		if v < 0 || v > 1 {
			return at.errorf("setting precedence-gap: %v is out of range; write a number from 0 to 1", v)
		}
		l.precedenceGap = v
		return nil
	case "negation-window":
		if v != float64(int(v)) || v < 1 || v > 8 {
			return at.errorf("setting negation-window: %v must be a whole number of words from 1 to 8", v)
		}
		l.negationWindow = int(v)
		return nil
	}
	return at.errorf("unknown setting %q; the settings are threshold, cross-threshold, model-threshold, negation-factor, negation-window, mention-factor, precedence-gap", name)
}

func parseRuleHead(s string, at src) (*rawRule, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return nil, at.errorf("write a rule as \"rule NAME CATEGORY WEIGHT\", e.g. \"rule kill-myself suicide 0.95\"")
	}
	if !validName(f[0]) {
		return nil, at.errorf("rule name %q: use lower-case letters, digits, - and _", f[0])
	}
	if !slices.Contains(categories, f[1]) {
		return nil, at.errorf("rule %s: unknown category %q; the categories are %s", f[0], f[1], strings.Join(categories, ", "))
	}
	w, err := strconv.ParseFloat(f[2], 64)
	if err != nil || w <= 0 || w > 1 {
		return nil, at.errorf("rule %s: weight %q must be a number above 0 and at most 1 (0.95 says it outright, 0.6 indirect, 0.3 a hint that needs company)", f[0], f[2])
	}
	return &rawRule{name: f[0], category: f[1], weight: w, at: at}, nil
}

// parseClause reads an indented line under a rule or idiom.
func (l *lexicon) parseClause(r *rawRule, s string, at src) error {
	head, body, ok := strings.Cut(s, ":")
	if !ok {
		return at.errorf("%q: a rule's lines read \"match: ...\", \"near N: ... ; ...\", \"with: ... ; ...\", \"anywhere: ... ; ...\", \"unless: ...\", \"unless N: ...\", \"example: ...\" or \"not: ...\"", s)
	}
	body = strings.TrimSpace(body)
	key, arg, _ := strings.Cut(strings.TrimSpace(head), " ")
	num := func() (int, error) {
		n, err := strconv.Atoi(strings.TrimSpace(arg))
		if err != nil || n < 0 || n > maxNear {
			return 0, at.errorf("%s: %q is not a number of words from 0 to %d", key, arg, maxNear)
		}
		return n, nil
	}
	if body == "" {
		return at.errorf("%s: nothing after the colon", key)
	}
	switch key {
	case "example", "not":
		item := rawItem{body, at}
		if key == "example" {
			r.examples = append(r.examples, item)
		} else {
			r.nots = append(r.nots, item)
		}
		return nil
	}
	if r.idiom {
		return at.errorf("an idiom takes only \"example:\" and \"not:\" lines; write a rule for %q", key)
	}
	switch key {
	case "match":
		if arg != "" {
			return at.errorf("match takes no number; write \"match: words\" or \"near N: words ; words\"")
		}
		r.conds = append(r.conds, rawCond{kind: condMatch, patterns: []string{body}, at: at})
	case "near", "with", "anywhere":
		c := rawCond{kind: condNear, at: at}
		switch key {
		case "with":
			c.kind = condWith
		case "anywhere":
			c.kind = condAnywhere
		default:
			n, err := num()
			if err != nil {
				return err
			}
			c.n = n
		}
		for p := range strings.SplitSeq(body, ";") {
			c.patterns = append(c.patterns, strings.TrimSpace(p))
		}
		if len(c.patterns) < 2 {
			return at.errorf("%s needs two or more patterns separated by \";\"", key)
		}
		r.conds = append(r.conds, c)
	case "unless":
		u := rawUnless{n: -1, pattern: body, at: at}
		if arg != "" {
			n, err := num()
			if err != nil {
				return err
			}
			u.n = n
		}
		r.unless = append(r.unless, u)
	default:
		return at.errorf("unknown rule line %q; use match, near N, with, anywhere, unless, unless N, example or not", key)
	}
	return nil
}

func (l *lexicon) addFuzzy(w string) {
	l.vocab[w] = true
	l.fuzzy[w] = w
	for i := range len(w) {
		d := w[:i] + w[i+1:]
		if _, ok := l.fuzzy[d]; !ok {
			l.fuzzy[d] = w
		}
	}
	if l.fuzzyLen[0] == 0 || len(w) < l.fuzzyLen[0] {
		l.fuzzyLen[0] = len(w)
	}
	l.fuzzyLen[1] = max(l.fuzzyLen[1], len(w))
}

func (c *compiler) newSet() *wordSet {
	s := &wordSet{words: map[string]bool{}}
	c.l.allSets = append(c.l.allSets, s)
	return s
}

// compiler turns raw patterns into elements, resolving families.
type compiler struct {
	l         *lexicon
	resolving map[string]bool
	errs      []error
}

func (c *compiler) set(name string, at src) *wordSet {
	if s := c.l.sets[name]; s != nil {
		return s
	}
	rs := c.l.rawSets[name]
	if rs == nil {
		c.errs = append(c.errs, at.errorf("unknown family @%s; define it with \"set %s = ...\"", name, name))
		return c.newSet()
	}
	if c.resolving[name] {
		c.errs = append(c.errs, at.errorf("family @%s contains itself", name))
		return c.newSet()
	}
	c.resolving[name] = true
	defer delete(c.resolving, name)
	s := c.newSet()
	for _, it := range rs.items {
		es, err := c.pattern(it.pattern, it.at)
		if err != nil {
			c.errs = append(c.errs, err)
			continue
		}
		c.addItem(s, es, it)
	}
	c.l.sets[name] = s
	return s
}

// addItem puts one compiled item into a family: a plain word or prefix
// joins the map or list, a nested family is merged, anything longer stays
// a pattern.
func (c *compiler) addItem(s *wordSet, es []elem, it rawItem) {
	if len(es) == 1 && es[0].kind == elSet && !es[0].opt {
		in := es[0].set
		for w := range in.words {
			s.words[w] = true
		}
		s.prefixes = append(s.prefixes, in.prefixes...)
		s.seqs = append(s.seqs, in.seqs...)
		return
	}
	if len(es) == 0 || es[0].kind == elGap || es[0].opt {
		c.errs = append(c.errs, it.at.errorf("family item %q must start with a word", it.pattern))
		return
	}
	s.seqs = append(s.seqs, es)
}

// pattern compiles a pattern: elements separated by spaces, where each is
// one of
//
//	word        the word itself (normalised like message text)
//	word*       any word starting with it
//	a|b*|@f     any of these single words or families
//	(a b|c d)   any of these phrases (no gaps inside)
//	@family     any item of a family
//	x?          x or nothing (also after a group)
//	..N         up to N words of anything
//	_           any one word
//	{num} {num:N} {dose} {keyword}
func (c *compiler) pattern(s string, at src) ([]elem, error) {
	fields, err := splitPattern(s)
	if err != "" {
		return nil, at.errorf("pattern %q: %s", s, err)
	}
	var out []elem
	for _, f := range fields {
		e, err := c.element(f, at)
		if err != nil {
			return nil, err
		}
		out = append(out, e...)
	}
	if len(out) == 0 {
		return nil, at.errorf("empty pattern")
	}
	if len(out) > maxElems {
		return nil, at.errorf("pattern %q has more than %d words; split it into a near rule", s, maxElems)
	}
	if out[len(out)-1].kind == elGap {
		return nil, at.errorf("pattern %q ends with a gap; a gap goes between two words", s)
	}
	if !slices.ContainsFunc(out, func(e elem) bool { return !e.opt && e.kind != elGap }) {
		return nil, at.errorf("pattern %q has only optional words; it would match anything", s)
	}
	return c.applyAliases(out), nil
}

// applyAliases reads a pattern's words the way message words are read:
// "is not" becomes "isnt" and "gonna" "going to", so a pattern written
// either way matches.
func (c *compiler) applyAliases(es []elem) []elem {
	for _, e := range es {
		if e.kind != elSet {
			continue
		}
		var from []string
		for w := range e.set.words {
			if slices.ContainsFunc(c.l.aliases[w], func(a alias) bool { return len(a.from) == 1 }) {
				from = append(from, w)
			}
		}
		for _, w := range from {
			for _, a := range c.l.aliases[w] {
				if len(a.from) != 1 {
					continue
				}
				delete(e.set.words, w)
				if len(a.to) == 1 {
					e.set.words[a.to[0]] = true
				} else {
					e.set.seqs = append(e.set.seqs, c.literals(a.to))
				}
			}
		}
	}
	word := func(e elem) string {
		if e.kind != elSet || e.opt || len(e.set.words) != 1 || len(e.set.prefixes) > 0 || len(e.set.seqs) > 0 {
			return ""
		}
		for w := range e.set.words {
			return w
		}
		return ""
	}
	out := es[:0:0]
	for i := 0; i < len(es); i++ {
		done := false
		for _, a := range c.l.aliases[word(es[i])] {
			if len(a.from) < 2 || i+len(a.from) > len(es) {
				continue
			}
			match := true
			for k, w := range a.from {
				if word(es[i+k]) != w {
					match = false
					break
				}
			}
			if match {
				out = append(out, c.literals(a.to)...)
				i += len(a.from) - 1
				done = true
				break
			}
		}
		if !done {
			out = append(out, es[i])
		}
	}
	return out
}

// splitPattern splits a pattern at spaces outside parentheses.
func splitPattern(s string) ([]string, string) {
	var out []string
	depth, start := 0, -1
	for i, r := range s {
		switch {
		case r == '(':
			if depth > 0 {
				return nil, "groups do not nest; use a family for the inner one"
			}
			depth++
		case r == ')':
			if depth == 0 {
				return nil, "\")\" without \"(\""
			}
			depth--
		case r == ' ' || r == '\t':
			if depth == 0 {
				if start >= 0 {
					out = append(out, s[start:i])
				}
				start = -1
				continue
			}
		}
		if start < 0 {
			start = i
		}
	}
	if depth > 0 {
		return nil, "\"(\" without \")\""
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out, ""
}

// literals makes one element per word.
func (c *compiler) literals(words []string) []elem {
	es := make([]elem, len(words))
	for i, w := range words {
		s := c.newSet()
		s.words[w] = true
		c.l.vocab[w] = true
		es[i] = elem{kind: elSet, set: s}
	}
	return es
}

func (c *compiler) element(f string, at src) ([]elem, error) {
	if strings.HasPrefix(f, "..") {
		n, err := strconv.Atoi(f[2:])
		if err != nil || n < 1 || n > maxGap {
			return nil, at.errorf("gap %q: write ..N with N from 1 to %d", f, maxGap)
		}
		return []elem{{kind: elGap, max: n}}, nil
	}
	opt := false
	if len(f) > 1 && strings.HasSuffix(f, "?") {
		opt, f = true, f[:len(f)-1]
	}
	if strings.HasPrefix(f, "(") {
		if !strings.HasSuffix(f, ")") {
			return nil, at.errorf("%q: a group ends with \")\" (or \")?\")", f)
		}
		s := c.newSet()
		for alt := range strings.SplitSeq(f[1:len(f)-1], "|") {
			alt = strings.TrimSpace(alt)
			if alt == "" {
				return nil, at.errorf("%q has an empty alternative; remove the extra \"|\"", f)
			}
			es, err := c.pattern(alt, at)
			if err != nil {
				return nil, err
			}
			for _, e := range es {
				if e.kind == elGap {
					return nil, at.errorf("%q: no gaps inside a group; write two rules", f)
				}
			}
			c.addItem(s, es, rawItem{alt, at})
		}
		return []elem{{kind: elSet, opt: opt, set: s}}, nil
	}
	switch {
	case f == "_":
		return []elem{{kind: elAny, opt: opt}}, nil
	case f == "{num}":
		return []elem{{kind: elNum, opt: opt}}, nil
	case strings.HasPrefix(f, "{num:") && strings.HasSuffix(f, "}"):
		n, err := strconv.Atoi(f[5 : len(f)-1])
		if err != nil || n < 0 {
			return nil, at.errorf("%q: write {num:N} with N a whole number, e.g. {num:5} for 5 or more", f)
		}
		return []elem{{kind: elNum, opt: opt, max: n}}, nil
	case f == "{dose}":
		return []elem{{kind: elDose, opt: opt}}, nil
	}
	s := c.newSet()
	for alt := range strings.SplitSeq(f, "|") {
		switch {
		case alt == "":
			return nil, at.errorf("%q has an empty alternative; remove the extra \"|\"", f)
		case alt == "{keyword}":
			if c.l.keyword != "" {
				s.words[c.l.keyword] = true
				for _, t := range c.l.translate[c.l.keyword] {
					s.words[t] = true
				}
			}
		case alt[0] == '@':
			in := c.set(alt[1:], at)
			for w := range in.words {
				s.words[w] = true
			}
			s.prefixes = append(s.prefixes, in.prefixes...)
			s.seqs = append(s.seqs, in.seqs...)
		case strings.HasSuffix(alt, "*"):
			p := normalize(strings.TrimSuffix(alt, "*"))
			if len(p) < 3 || strings.Contains(p, " ") {
				return nil, at.errorf("prefix %q: write at least three letters before \"*\"", alt)
			}
			s.prefixes = append(s.prefixes, p)
			if !slices.Contains(c.l.prefixList, p) {
				c.l.prefixList = append(c.l.prefixList, p)
			}
		case strings.ContainsAny(alt, "{}()?"):
			return nil, at.errorf("%q: {num}, {dose}, groups and \"?\" cannot be alternatives; use a group: (a b|c)", alt)
		default:
			w := normalize(alt)
			if w == "" {
				return nil, at.errorf("%q has no letters, digits or emoji to match", alt)
			}
			if strings.Contains(w, " ") {
				// "self-harm" reads as two words.
				es, err := c.pattern(w, at)
				if err != nil {
					return nil, err
				}
				s.seqs = append(s.seqs, es)
				for _, x := range strings.Fields(w) {
					c.l.vocab[x] = true
				}
				continue
			}
			s.words[w] = true
			c.l.vocab[w] = true
		}
	}
	return []elem{{kind: elSet, opt: opt, set: s}}, nil
}

// compile builds the index and rules from the parsed files.
func (l *lexicon) compile(extra map[string][]string) []error {
	c := &compiler{l: l, resolving: map[string]bool{}}
	for _, name := range l.setOrder {
		c.set(name, l.rawSets[name].at)
	}
	addPart := func(p string, at src) (int32, bool) {
		es, err := c.pattern(p, at)
		if err != nil {
			c.errs = append(c.errs, err)
			return 0, false
		}
		for _, e := range es {
			if e.kind == elGap || e.kind == elAny {
				c.errs = append(c.errs, at.errorf("pattern %q must start with a word, a family, {num} or {dose} that is not optional", p))
				return 0, false
			}
			if !e.opt {
				break
			}
		}
		l.parts = append(l.parts, part{elems: es, text: p})
		return int32(len(l.parts) - 1), true
	}
	names := map[string]src{}
	for _, rr := range l.rawRules {
		if rr.idiom {
			id, ok := addPart(rr.conds[0].patterns[0], rr.at)
			if !ok {
				continue
			}
			if rr.category == "negation-except" {
				l.negExcept = append(l.negExcept, id)
			} else {
				l.idioms = append(l.idioms, id)
				r := &rule{name: rr.name, conds: nil, at: rr.at}
				for _, e := range rr.examples {
					r.examples = append(r.examples, e.pattern)
				}
				for _, e := range rr.nots {
					r.nots = append(r.nots, e.pattern)
				}
				l.idiomRules = append(l.idiomRules, r)
			}
			continue
		}
		if prev, dup := names[rr.name]; dup {
			c.errs = append(c.errs, rr.at.errorf("rule %s is already defined (line %d of %s); give it another name", rr.name, prev.line, lexiconName(prev.lexicon)))
			continue
		}
		names[rr.name] = rr.at
		if len(rr.conds) == 0 {
			c.errs = append(c.errs, rr.at.errorf("rule %s has no \"match:\", \"near N:\", \"with:\" or \"anywhere:\" line, so it can never match", rr.name))
			continue
		}
		r := &rule{name: rr.name, category: rr.category, weight: rr.weight, at: rr.at}
		ri := int32(len(l.rules))
		for _, rc := range rr.conds {
			cd := cond{rule: ri, kind: rc.kind, n: rc.n}
			for _, p := range rc.patterns {
				if id, ok := addPart(p, rc.at); ok {
					l.parts[id].cond = true
					cd.parts = append(cd.parts, id)
				}
			}
			if len(cd.parts) == len(rc.patterns) {
				l.conds = append(l.conds, cd)
				r.conds = append(r.conds, int32(len(l.conds)-1))
			}
		}
		for _, u := range rr.unless {
			if id, ok := addPart(u.pattern, u.at); ok {
				r.unless = append(r.unless, unlessRef{part: id, n: u.n})
			}
		}
		for _, e := range rr.examples {
			r.examples = append(r.examples, e.pattern)
		}
		for _, e := range rr.nots {
			r.nots = append(r.nots, e.pattern)
		}
		l.rules = append(l.rules, r)
	}
	// Phrases from config ([triage.extra]) are plain rules.
	for _, cat := range sortedKeys(extra) {
		if !slices.Contains(categories, cat) {
			c.errs = append(c.errs, fmt.Errorf("triage: extra phrases for %q: unknown category; the categories are %s", cat, strings.Join(categories, ", ")))
			continue
		}
		for i, p := range extra[cat] {
			n := normalize(p)
			if n == "" {
				c.errs = append(c.errs, fmt.Errorf("triage: extra phrases for %q [%d]: %q has no words to match", cat, i, p))
				continue
			}
			for w := range strings.FieldsSeq(n) {
				l.vocab[w] = true
			}
			es, _ := c.pattern(n, src{}) // normalised words are plain pattern words
			l.parts = append(l.parts, part{elems: es, text: n, cond: true})
			l.conds = append(l.conds, cond{rule: int32(len(l.rules)), kind: condMatch, parts: []int32{int32(len(l.parts) - 1)}})
			l.rules = append(l.rules, &rule{name: fmt.Sprintf("extra-%s-%d", cat, i), category: cat, weight: weightExtra,
				conds: []int32{int32(len(l.conds) - 1)}, examples: []string{p}})
		}
	}
	l.index()
	return c.errs
}

// index numbers the vocabulary, finishes every family's bitset and
// records, for every part, the first words it can start with.
func (l *lexicon) index() {
	// Every word a pattern names is known, so typo and stretch repair
	// leave it alone.
	for _, s := range l.allSets {
		for w := range s.words {
			l.vocab[w] = true
		}
	}
	for w := range l.negations {
		l.vocab[w] = true
	}
	for w := range l.through {
		l.vocab[w] = true
	}
	for w := range l.fillers {
		l.vocab[w] = true
	}
	words := sortedKeys(l.vocab)
	n := len(words) + 1
	l.ids = make(map[string]int32, len(words))
	for i, w := range words {
		l.ids[w] = int32(i + 1)
	}
	l.negBits, l.thruBits, l.fillBits = make([]bool, n), make([]bool, n), make([]bool, n)
	for w := range l.fillers {
		l.fillBits[l.ids[w]] = true
	}
	for w := range l.negations {
		l.negBits[l.ids[w]] = true
	}
	for w := range l.through {
		l.thruBits[l.ids[w]] = true
	}
	for _, s := range l.allSets {
		s.nbits = (n + 63) / 64
		var ids []int32
		for w := range s.words {
			ids = append(ids, l.ids[w])
		}
		for _, p := range s.prefixes {
			for i := sort.SearchStrings(words, p); i < len(words) && strings.HasPrefix(words[i], p); i++ {
				ids = append(ids, int32(i+1))
			}
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		if len(ids) <= smallSet {
			s.ids = ids
			continue
		}
		s.bits = make([]uint64, s.nbits)
		for _, id := range ids {
			s.bits[id>>6] |= 1 << (id & 63)
		}
	}

	for _, s := range l.allSets {
		s.needPhrases(l.ids)
	}
	l.byID = make([][]int32, n)
	l.byPrefix = map[[3]byte][]prefixRef{}
	var add func(id int32, es []elem)
	add = func(id int32, es []elem) {
		for _, e := range es {
			switch e.kind {
			case elNum:
				l.numIndex = appendOnce(l.numIndex, id)
			case elDose:
				l.doseIndex = appendOnce(l.doseIndex, id)
			case elSet:
				for wi, b := range e.set.bitset() {
					for ; b != 0; b &= b - 1 {
						w := wi*64 + bits.TrailingZeros64(b)
						l.byID[w] = appendOnce(l.byID[w], id)
					}
				}
				for _, p := range e.set.prefixes {
					k := [3]byte{p[0], p[1], p[2]}
					l.byPrefix[k] = append(l.byPrefix[k], prefixRef{p, id})
				}
				for _, sq := range e.set.seqs {
					add(id, sq)
				}
			}
			if !e.opt {
				return
			}
		}
	}
	for i := range l.parts {
		p := &l.parts[i]
		if p.cond {
			add(int32(i), p.elems)
		}
		// A family with no prefix and no phrase is in the message's bag of
		// words or not: a quick test before matching.
		for _, e := range p.elems {
			if e.kind == elSet && !e.opt && len(e.set.prefixes) == 0 && !e.set.alwaysPossible {
				p.need = append(p.need, e.set)
			}
		}
		// The smallest family most often rules a part out; test it first.
		slices.SortStableFunc(p.need, func(a, b *wordSet) int {
			return len(a.ids) + 64*len(a.bits) + len(a.phraseNeed) - len(b.ids) - 64*len(b.bits) - len(b.phraseNeed)
		})
	}
	l.partConds = make([][]int32, len(l.parts))
	for ci, c := range l.conds {
		for _, p := range c.parts {
			l.partConds[p] = append(l.partConds[p], int32(ci))
		}
	}
	for _, as := range l.aliases {
		slices.SortFunc(as, func(a, b alias) int { return len(b.from) - len(a.from) })
	}
}

func appendOnce(s []int32, id int32) []int32 {
	if len(s) > 0 && s[len(s)-1] == id {
		return s
	}
	return append(s, id)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
