package policies

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// ruleHit reports whether rule ri matched in hits, and how strongly.
func ruleHit(hits []hit, ri int) (bool, float64) {
	for _, h := range hits {
		if int(h.rule) == ri {
			return true, h.weight
		}
	}
	return false, 0
}

// TestLexiconExamples runs every rule's own examples: each rule has at
// least one, each example matches the rule and comes out urgent with the
// rule's category, and each "not:" line stays routine and the rule does
// not count in it (no match, or one lowered below the threshold by a
// negation or quotes; a hint rule may match).
func TestLexiconExamples(t *testing.T) {
	tr := rulesOnly(t, "URGENT", nil)
	for ri, r := range tr.lx.rules {
		t.Run(r.name, func(t *testing.T) {
			if len(r.examples) == 0 {
				t.Fatalf("rule %s (line %d) has no example: line; add a message it must flag", r.name, r.at.line)
			}
			for _, ex := range r.examples {
				v, hits := tr.classify("", ex)
				if ok, _ := ruleHit(hits, ri); !ok {
					t.Errorf("example %q does not match rule %s (verdict %+v)", ex, r.name, v)
					continue
				}
				if !v.Urgent || v.Category != r.category {
					t.Errorf("example %q: verdict %+v, want urgent %s", ex, v, r.category)
				}
			}
			for _, ex := range r.nots {
				v, hits := tr.classify("", ex)
				if ok, w := ruleHit(hits, ri); ok && w >= tr.lx.threshold {
					t.Errorf("not: %q matches rule %s", ex, r.name)
				}
				if v.Urgent {
					t.Errorf("not: %q is urgent: %+v", ex, v)
				}
			}
		})
	}
}

// TestLexiconIdioms checks that every figure of speech has an example
// that contains it and stays routine.
func TestLexiconIdioms(t *testing.T) {
	tr := rulesOnly(t, "URGENT", nil)
	if len(tr.lx.idiomRules) != len(tr.lx.idioms) {
		t.Fatalf("%d idioms, %d idiom rules", len(tr.lx.idioms), len(tr.lx.idiomRules))
	}
	for i, r := range tr.lx.idiomRules {
		t.Run(r.name, func(t *testing.T) {
			if len(r.nots) == 0 {
				t.Fatalf("%s (line %d) has no not: line; add a message that uses it harmlessly", r.name, r.at.line)
			}
			for _, ex := range r.nots {
				if !tr.partMatches(tr.lx.idioms[i], ex) {
					t.Errorf("not: %q does not contain the idiom", ex)
				}
				if v := tr.Classify("", ex); v.Urgent {
					t.Errorf("not: %q is urgent: %+v", ex, v)
				}
			}
		})
	}
}

// partMatches reports whether part id occurs in text.
func (t *Triage) partMatches(id int32, text string) bool {
	sc := t.pool.Get().(*scratch)
	defer t.pool.Put(sc)
	toks := sc.tokens("", text)
	m := matcher{toks: toks}
	for p := range toks {
		if e, _ := m.seq(t.lx.parts[id].elems, 0, p, toks[p].sent, p, 0); e > p {
			return true
		}
	}
	return false
}

func TestLexiconNegationExceptions(t *testing.T) {
	tr := rulesOnly(t, "URGENT", nil)
	// "dont worry" is no negation: the statement after it still counts.
	if v := tr.Classify("", "dont worry i want to die"); v.Category != CategorySuicide {
		t.Fatalf("%+v", v)
	}
	if v := tr.Classify("", "i dont want to die"); v.Urgent {
		t.Fatalf("a plain negation should lower the weight below the threshold: %+v", v)
	}
}

func TestParseLexiconErrors(t *testing.T) {
	tests := []struct {
		name, text string
		line       int
		want       string
	}{
		{"unknown directive", "sett x = a", 1, `unknown directive "sett"`},
		{"indented orphan", "  match: a", 1, "belongs to no rule"},
		{"bad category", "rule a sadness 0.5", 1, `unknown category "sadness"`},
		{"bad weight", "rule a suicide 2", 1, "weight"},
		{"no condition", "rule a suicide 0.5\n  example: x", 1, "can never match"},
		{"unknown family", "rule a suicide 0.5\n  match: @nope", 2, "unknown family @nope"},
		{"gap first", "rule a suicide 0.5\n  match: ..2 die", 2, "must start with a word"},
		{"gap last", "rule a suicide 0.5\n  match: die ..2", 2, "ends with a gap"},
		{"bad gap", "rule a suicide 0.5\n  match: a ..99 b", 2, "gap"},
		{"only optional", "rule a suicide 0.5\n  match: a? b?", 2, "only optional"},
		{"unclosed group", "rule a suicide 0.5\n  match: (a b", 2, `"(" without ")"`},
		{"gap in group", "rule a suicide 0.5\n  match: (a ..2 b|c)", 2, "no gaps inside a group"},
		{"short prefix", "rule a suicide 0.5\n  match: ki*", 2, "three letters"},
		{"redefined family", "set i = me", 1, "already defined"},
		{"add to unknown family", "set zz += me", 1, "not defined yet"},
		{"bad setting", "setting threshold 7", 1, "out of range"},
		{"unknown setting", "setting speed 1", 1, "unknown setting"},
		{"short fuzzy", "fuzzy cut", 1, "shorter than"},
		{"duplicate rule", "rule kms suicide 0.5\n  match: x", 1, "already defined"},
		{"bad clause", "rule a suicide 0.5\n  matches: x", 2, "unknown rule line"},
		{"near needs two", "rule a suicide 0.5\n  near 3: x", 2, "two or more patterns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTriage("URGENT", nil, []byte(tt.text))
			if err == nil {
				t.Fatal("no error")
			}
			var le *LexiconError
			if !errors.As(err, &le) {
				t.Fatalf("%v is not a *LexiconError", err)
			}
			if le.Lexicon != 1 || le.Line != tt.line || !strings.Contains(le.Msg, tt.want) {
				t.Fatalf("got %v (lexicon %d line %d), want line %d with %q", err, le.Lexicon, le.Line, tt.line, tt.want)
			}
			if !strings.Contains(err.Error(), "extra lexicon 1 line") {
				t.Fatalf("%q does not name the file and line", err)
			}
		})
	}
}

func TestExtraLexicon(t *testing.T) {
	extra := []byte(`
# a practice's own additions
set possessions += ukulele
alias doing the thing = cutting
rule code-word self-harm 0.9
  match: (red|blue) (balloon|balloons)
  example: thinking about red balloons tonight
`)
	tr, err := NewTriage("URGENT", nil, extra, []byte("setting model-threshold 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v := tr.Classify("", "thinking about red balloons tonight"); v.Category != CategorySelfHarm {
		t.Fatalf("own rule: %+v", v)
	}
	if v := tr.Classify("", "i want to hurt myself, doing the thing again"); v.Category != CategorySelfHarm {
		t.Fatalf("alias: %+v", v)
	}
	// The family grew: giving the ukulele away is a farewell hint, which
	// together with "bye everyone" is urgent.
	if v := tr.Classify("", "bye everyone. gave my ukulele to sam"); !v.Urgent || !slices.Contains(v.Evidence, "gave my ukulele") {
		t.Fatalf("family extension: %+v", v)
	}
	base := rulesOnly(t, "URGENT", nil)
	if v := base.Classify("", "thinking about red balloons tonight"); v.Urgent {
		t.Fatalf("the built-in triage must not see extra rules: %+v", v)
	}
}
