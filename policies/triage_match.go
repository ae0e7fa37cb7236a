package policies

import (
	"slices"
	"strings"
)

// matcher matches one pattern at one place, backtracking over optional
// words, gaps and multi-word family items. A match never leaves the
// sentence it starts in.
type matcher struct {
	toks []token
	fill []bool // word numbers a pattern may step over between its words
}

// maxFillers is how many filler words may come between two pattern words.
const maxFillers = 2

// seq matches es[k:] at token p. base is where the whole match started;
// mask marks the words matched by named elements (not gaps), relative to
// base. It returns the end of the match, or -1.
func (m *matcher) seq(es []elem, k, p int, sent int32, base int, mask uint64) (int, uint64) {
	if k == len(es) {
		return p, mask
	}
	if es[k].opt {
		if end, mk := m.one(es, k, p, sent, base, mask); end >= 0 {
			return end, mk
		}
		return m.seq(es, k+1, p, sent, base, mask)
	}
	return m.one(es, k, p, sent, base, mask)
}

func (m *matcher) one(es []elem, k, p int, sent int32, base int, mask uint64) (int, uint64) {
	e := &es[k]
	toks := m.toks
	if e.kind == elGap {
		for n := 0; n <= e.max; n++ {
			if end, mk := m.seq(es, k+1, p+n, sent, base, mask); end >= 0 {
				return end, mk
			}
			if p+n >= len(toks) || toks[p+n].sent != sent {
				break
			}
		}
		return -1, 0
	}
	if p >= len(toks) || toks[p].sent != sent {
		return -1, 0
	}
	// "I don't really want to live": between two words of a pattern,
	// fillers the lexicon names are stepped over.
	if k > 0 && es[k-1].kind != elGap && m.fill != nil {
		for q, n := p, 0; n < maxFillers && q < len(toks) && toks[q].sent == sent && m.fill[toks[q].id] &&
			!(e.kind == elSet && e.set.has(&toks[q])); n++ {
			q++
			if end, mk := m.at(es, k, q, sent, base, mask); end >= 0 {
				return end, mk
			}
		}
	}
	return m.at(es, k, p, sent, base, mask)
}

// at matches the concrete element es[k] exactly at token p.
func (m *matcher) at(es []elem, k, p int, sent int32, base int, mask uint64) (int, uint64) {
	e := &es[k]
	toks := m.toks
	if p >= len(toks) || toks[p].sent != sent {
		return -1, 0
	}
	named := mask
	if d := p - base; d < 64 {
		named |= 1 << d
	}
	t := &toks[p]
	switch e.kind {
	case elAny:
		return m.seq(es, k+1, p+1, sent, base, named)
	case elNum:
		if t.kind == kindNum && (e.max == 0 || atLeast(t.text, e.max)) {
			return m.seq(es, k+1, p+1, sent, base, named)
		}
	case elDose:
		if t.kind == kindDose {
			return m.seq(es, k+1, p+1, sent, base, named)
		}
	case elSet:
		if e.set.has(t) {
			if end, mk := m.seq(es, k+1, p+1, sent, base, named); end >= 0 {
				return end, mk
			}
		}
		for _, sq := range e.set.seqs {
			if end, mk := m.seq(sq, 0, p, sent, base, mask); end > p {
				if end2, mk2 := m.seq(es, k+1, end, sent, base, mk); end2 >= 0 {
					return end2, mk2
				}
			}
		}
	}
	return -1, 0
}

// excepted reports whether the negation at q is part of a phrase that
// negates nothing: "dont worry", "no matter", "not only".
func (sc *scratch) excepted(toks []token, q int32) bool {
	m := matcher{toks: toks, fill: sc.lx.fillBits}
	sent := toks[q].sent
	for _, id := range sc.lx.negExcept {
		if !sc.partOK(id) {
			continue
		}
		for p := max(sc.sentLo[sent], q-4); p <= q; p++ {
			if end, _ := m.seq(sc.lx.parts[id].elems, 0, int(p), sent, int(p), 0); end > int(q) {
				return true
			}
		}
	}
	return false
}

// evalCond turns a condition's occurrences into hits.
func (sc *scratch) evalCond(toks []token, ci int32) {
	c := &sc.lx.conds[ci]
	if c.kind == condMatch {
		for o := sc.head[c.parts[0]]; o != 0; o = sc.occ[o-1].next {
			oc := &sc.occ[o-1]
			sc.consider(toks, c.rule, oc.negated, [][2]int32{{oc.start, oc.end}})
		}
		return
	}
	for _, p := range c.parts {
		if sc.head[p] == 0 {
			return
		}
	}
	var chosen [8]*occurrence
	sc.combine(toks, c, chosen[:0])
}

// combine picks one occurrence per pattern of a condition, not
// overlapping: near, within n words of each other; with, in one sentence;
// anywhere, in the message. None reaches across subject and body. It
// stops at the first combination that counts in full.
func (sc *scratch) combine(toks []token, c *cond, chosen []*occurrence) bool {
	i := len(chosen)
	if i == len(c.parts) {
		spans := make([][2]int32, len(chosen))
		neg := false
		for j, o := range chosen {
			spans[j] = [2]int32{o.start, o.end}
			neg = neg || o.negated
		}
		return sc.consider(toks, c.rule, neg, spans) && !neg
	}
	for o := sc.head[c.parts[i]]; o != 0; o = sc.occ[o-1].next {
		oc := &sc.occ[o-1]
		ok := true
		maxStart, minEnd := oc.start, oc.end
		for _, p := range chosen {
			a, b := &toks[p.start], &toks[oc.start]
			apart := a.part != b.part || (c.kind == condWith && a.sent != b.sent)
			if apart || (oc.start < p.end && p.start < oc.end) {
				ok = false
				break
			}
			maxStart, minEnd = max(maxStart, p.start), min(minEnd, p.end)
		}
		if !ok || (c.kind == condNear && maxStart-minEnd > int32(c.n)) {
			continue
		}
		if sc.combine(toks, c, append(chosen, oc)) {
			return true
		}
	}
	return false
}

// consider records a hit of rule r over spans unless a figure of speech
// or one of the rule's "unless" patterns rules it out. It reports whether
// the hit was kept.
func (sc *scratch) consider(toks []token, ri int32, neg bool, spans [][2]int32) bool {
	l := sc.lx
	r := l.rules[ri]
	start, end := spans[0][0], spans[0][1]
	for _, s := range spans[1:] {
		start, end = min(start, s[0]), max(end, s[1])
	}
	// A figure of speech shares words with the hit without being inside
	// it: "killing me" in "this traffic is killing me". A hit that holds
	// the whole idiom still counts. Idioms and "unless" patterns are
	// looked for only now, in the hit's sentences.
	m := matcher{toks: toks, fill: l.fillBits}
	for sent := toks[start].sent; sent <= toks[end-1].sent; sent++ {
		if int(sent) >= len(sc.sentLo) || sc.sentHi[sent] <= sc.sentLo[sent] {
			continue
		}
		lo, hi := int(sc.sentLo[sent]), int(sc.sentHi[sent])
		for _, id := range l.idioms {
			if !sc.partOK(id) {
				continue
			}
			for p := lo; p < hi; p++ {
				e, _ := m.seq(l.parts[id].elems, 0, p, sent, p, 0)
				if e <= p {
					continue
				}
				is, ie := int32(p), int32(e)
				for _, s := range spans {
					if s[0] < ie && is < s[1] && !(s[0] <= is && ie <= s[1]) {
						return false
					}
				}
			}
		}
		for _, u := range r.unless {
			if !sc.partOK(u.part) {
				continue
			}
			for p := lo; p < hi; p++ {
				e, _ := m.seq(l.parts[u.part].elems, 0, p, sent, p, 0)
				if e <= p {
					continue
				}
				// "unless" with no distance holds in the hit's sentences;
				// with one, that many words from any of its patterns.
				for _, s := range spans {
					if u.n < 0 || max(int32(p)-s[1], s[0]-int32(e)) <= int32(u.n) {
						return false
					}
				}
			}
		}
	}
	w := r.weight
	if neg {
		w *= l.negationFactor
	}
	if quoted(toks, start, end) {
		w *= l.mentionFactor
	}
	if b := sc.best[ri]; b != 0 {
		if h := &sc.hits[b-1]; w > h.weight {
			h.weight, h.start, h.end, h.spans = w, start, end, spans
		}
		return true
	}
	sc.hits = append(sc.hits, hit{rule: ri, weight: w, start: start, end: end, spans: spans})
	sc.best[ri] = int32(len(sc.hits))
	return true
}

// quoted reports whether the words start..end stand inside quote marks of
// their own: talked about, not said ("'kms' is the group chat's word").
func quoted(toks []token, start, end int32) bool {
	return toks[start].qopen && toks[end-1].qclose
}

// unstar reads a word censored with "*" ("k*ll") as the lexicon word it
// hides, trying each vowel; otherwise the stars are dropped.
func (l *lexicon) unstar(w []byte) []byte {
	if n := strings.Count(string(w), "*"); n == 1 {
		i := strings.IndexByte(string(w), '*')
		for _, v := range []byte("aeiouy") {
			w[i] = v
			if l.vocab[string(w)] {
				return w
			}
		}
		w[i] = '*'
	}
	return stripSymbols(w)
}

// iOrL reads the ambiguous letters of w ("1", "|", a capital I inside a
// word) as "l" when that, and not "i", makes a lexicon word: "ki11" is
// "kill", "k1ll" stays "kill".
func (l *lexicon) iOrL(w []byte, amb []int32) {
	if l.vocab[string(w)] {
		return
	}
	for _, i := range amb {
		if int(i) < len(w) {
			w[i] = 'l'
		}
	}
	if l.vocab[string(w)] {
		return
	}
	for _, i := range amb {
		if int(i) < len(w) {
			w[i] = 'i'
		}
	}
	for _, i := range amb {
		if int(i) >= len(w) {
			continue
		}
		w[i] = 'l'
		if l.vocab[string(w)] {
			return
		}
		w[i] = 'i'
	}
}

// unspace joins letter-spaced words ("k i l l  m y s e l f", "k.i.l.l")
// and splits the result into lexicon words. A run of three or more
// single letters that does not split into known words stays as it was.
func (l *lexicon) unspace(toks []token, out []token) []token {
	for i := 0; i < len(toks); i++ {
		j := i
		for j < len(toks) && isLetterTok(&toks[j]) && toks[j].sent == toks[i].sent {
			j++
		}
		if j-i < 3 {
			out = append(out, toks[i])
			continue
		}
		var b strings.Builder
		for _, t := range toks[i:j] {
			b.WriteString(t.text)
		}
		pieces := l.wordBreak(b.String())
		// Real words, not letters regrouped: "a b c d" stays.
		if len(pieces) > (j-i+1)/2 || !slices.ContainsFunc(pieces, func(p string) bool { return len(p) >= 3 }) {
			pieces = nil
		}
		if pieces == nil {
			out = append(out, toks[i:j]...)
			i = j - 1
			continue
		}
		k := i
		for _, p := range pieces {
			t := toks[k]
			t.text = p
			t.end = toks[k+len(p)-1].end
			t.qclose = toks[k+len(p)-1].qclose
			out = append(out, t)
			k += len(p)
		}
		i = j - 1
	}
	return out
}

func isLetterTok(t *token) bool {
	return t.kind == kindWord && len(t.text) == 1 && t.text[0] >= 'a' && t.text[0] <= 'z'
}

// wordBreak splits s into the fewest known words (or words formed from a
// lexicon prefix and a common ending); nil if it cannot.
func (l *lexicon) wordBreak(s string) []string {
	const inf = 1 << 30
	n := len(s)
	best := make([]int, n+1)
	from := make([]int, n+1)
	for i := 1; i <= n; i++ {
		best[i] = inf
		for j := max(0, i-20); j < i; j++ {
			if best[j] == inf || !l.knownPiece(s[j:i]) {
				continue
			}
			if best[j]+1 < best[i] {
				best[i], from[i] = best[j]+1, j
			}
		}
	}
	if best[n] == inf {
		return nil
	}
	var out []string
	for i := n; i > 0; i = from[i] {
		out = append(out, s[from[i]:i])
	}
	for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
		out[a], out[b] = out[b], out[a]
	}
	return out
}

var endings = []string{"", "s", "es", "ed", "d", "ing", "ting", "ning", "ping", "ming", "ling", "er", "ers", "y", "ies"}

func (l *lexicon) knownPiece(p string) bool {
	if l.vocab[p] {
		return true
	}
	for _, pre := range l.prefixList {
		if rest, ok := strings.CutPrefix(p, pre); ok {
			for _, e := range endings {
				if rest == e {
					return true
				}
			}
		}
	}
	return false
}

// spell repairs a word the lexicon does not know: stretched letters
// ("diiiie", "killlll") and one typo in a word marked fuzzy ("sucide").
func (l *lexicon) spell(w string) string {
	if l.vocab[w] || len(w) < 3 {
		return w
	}
	if hasRun(w, 3) {
		two, one := squeeze(w, 2), squeeze(w, 1)
		switch {
		case l.vocab[two]:
			return two
		case l.vocab[one]:
			return one
		}
		w = two
		if l.vocab[w] {
			return w
		}
	}
	if len(w) < minFuzzyLen-1 || len(w) > l.fuzzyLen[1]+1 {
		return w
	}
	if f, ok := l.fuzzy[w]; ok { // w is a fuzzy word missing one letter
		return f
	}
	var buf [64]byte
	if len(w) > len(buf) {
		return w
	}
	for i := range len(w) {
		n := copy(buf[:], w[:i])
		n += copy(buf[n:], w[i+1:])
		// One letter too many, one changed, or two swapped.
		if f, ok := l.fuzzy[string(buf[:n])]; ok && len(f) >= len(w)-1 && (len(f) == len(w)-1 || oneEdit(w, f)) {
			return f
		}
	}
	return w
}

// oneEdit reports whether same-length a and b differ by one letter or one
// swap of neighbours.
func oneEdit(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var diff []int
	for i := range len(a) {
		if a[i] != b[i] {
			diff = append(diff, i)
			if len(diff) > 2 {
				return false
			}
		}
	}
	switch len(diff) {
	case 1:
		return true
	case 2:
		i, j := diff[0], diff[1]
		return j == i+1 && a[i] == b[j] && a[j] == b[i]
	}
	return false
}

// hasRun reports whether w repeats one letter n times in a row.
func hasRun(w string, n int) bool {
	run := 1
	for i := 1; i < len(w); i++ {
		if w[i] == w[i-1] {
			run++
			if run >= n {
				return true
			}
		} else {
			run = 1
		}
	}
	return false
}

// squeeze shortens every run of one letter to at most n.
func squeeze(w string, n int) string {
	b := make([]byte, 0, len(w))
	run := 0
	for i := range len(w) {
		if i > 0 && w[i] == w[i-1] {
			run++
		} else {
			run = 1
		}
		if run <= n {
			b = append(b, w[i])
		}
	}
	return string(b)
}

// rewrite applies the aliases ("gonna" → "going to", "my self" →
// "myself"), longest first. A rewritten word quotes all the words it
// replaced.
func (l *lexicon) rewrite(toks []token, out []token) []token {
	for i := 0; i < len(toks); i++ {
		as := l.aliases[toks[i].text]
		done := false
		for _, a := range as {
			if i+len(a.from) > len(toks) {
				continue
			}
			ok := true
			for k, w := range a.from {
				if toks[i+k].text != w || toks[i+k].sent != toks[i].sent {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
			last := toks[i+len(a.from)-1]
			for _, w := range a.to {
				t := toks[i]
				t.text, t.kind, t.end, t.qclose = w, kindWord, last.end, last.qclose
				if w[0] >= '0' && w[0] <= '9' {
					t.kind = kindNum // "ten" → 10
				}
				out = append(out, t)
			}
			i += len(a.from) - 1
			done = true
			break
		}
		if !done {
			out = append(out, toks[i])
		}
	}
	return out
}

// atLeast reports whether the number n (digits, maybe a decimal point) is
// at least min.
func atLeast(n string, min int) bool {
	v := 0
	for i := range len(n) {
		c := n[i]
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int(c-'0')
		if v >= min {
			return true
		}
	}
	return v >= min
}
