package policies

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// evalCase is one labelled message of testdata/triage/*.jsonl.
type evalCase struct {
	ID       string `json:"id"`
	Channel  string `json:"channel"`
	Subject  string `json:"subject"`
	Text     string `json:"text"`
	Body     string `json:"body"` // accepted for "text"
	Lang     string `json:"lang"`
	Set      string `json:"set"` // "risk", "hard_negative" or "routine"
	Urgent   bool   `json:"urgent"`
	Category string `json:"category"`
}

// knownFields are the evalCase fields; others are reported.
var knownFields = map[string]bool{"id": true, "channel": true, "subject": true, "text": true, "body": true,
	"lang": true, "set": true, "urgent": true, "category": true}

// The aims for the labelled set (issue 5).
const (
	aimRecall        = 0.98
	aimHardNegFP     = 0.15
	aimRoutineFP     = 0.03
	aimHoldoutRecall = 0.95
)

func readEval(t testing.TB, name string) []evalCase {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "triage", name))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s is not there yet", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []evalCase
	ignored := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var c evalCase
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("%s line %d: %v", name, n, err)
		}
		var fields map[string]json.RawMessage
		json.Unmarshal([]byte(line), &fields)
		for k := range fields {
			if !knownFields[k] && !ignored[k] {
				ignored[k] = true
				t.Logf("%s: field %q is not read", name, k)
			}
		}
		if c.Text == "" {
			c.Text = c.Body
		}
		// An email written as one text may start with its subject line.
		if c.Subject == "" && strings.HasPrefix(c.Text, "Subject:") {
			first, rest, _ := strings.Cut(c.Text, "\n")
			c.Subject, c.Text = strings.TrimSpace(strings.TrimPrefix(first, "Subject:")), rest
		}
		if c.Category == "" && c.Urgent {
			c.Category = "(none)"
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ratio counts hits out of a total.
type ratio struct{ n, of int }

func (r *ratio) add(ok bool) {
	r.of++
	if ok {
		r.n++
	}
}

func (r ratio) value() float64 {
	if r.of == 0 {
		return 0
	}
	return float64(r.n) / float64(r.of)
}

func (r ratio) String() string { return fmt.Sprintf("%.3f (%d/%d)", r.value(), r.n, r.of) }

// evalReport is what one labelled set scores.
type evalReport struct {
	recall, catAgree, hardFP, routineFP ratio
	recallBy                            map[string]*ratio // per category
	langRecall                          map[string]*ratio
	chanRecall                          map[string]*ratio
	fpBy                                map[string]*ratio // per set and language
	weakMisses                          int               // misses with some evidence below the threshold
	missIDs                             []string
	misses, falseAlarms, wrongCat       []string
}

func evaluate(tr *Triage, cases []evalCase) evalReport {
	r := evalReport{recallBy: map[string]*ratio{}, fpBy: map[string]*ratio{}, langRecall: map[string]*ratio{}, chanRecall: map[string]*ratio{}}
	get := func(m map[string]*ratio, k string) *ratio {
		if m[k] == nil {
			m[k] = &ratio{}
		}
		return m[k]
	}
	for _, c := range cases {
		v, hits := tr.classify(c.Subject, c.Text)
		if c.Urgent {
			r.recall.add(v.Urgent)
			get(r.recallBy, c.Category).add(v.Urgent)
			get(r.langRecall, c.Lang).add(v.Urgent)
			get(r.chanRecall, c.Channel).add(v.Urgent)
			if !v.Urgent {
				if len(hits) > 0 {
					r.weakMisses++
				}
				r.missIDs = append(r.missIDs, c.ID)
				r.misses = append(r.misses, fmt.Sprintf("%s (%s, %s): %q", c.ID, c.Category, c.Lang, clip(c.Text)))
				continue
			}
			r.catAgree.add(v.Category == c.Category)
			if v.Category != c.Category {
				r.wrongCat = append(r.wrongCat, fmt.Sprintf("%s: %s, labelled %s %q", c.ID, v.Category, c.Category, v.Evidence))
			}
			continue
		}
		if c.Set == "hard_negative" {
			r.hardFP.add(v.Urgent)
		} else {
			r.routineFP.add(v.Urgent)
		}
		get(r.fpBy, c.Set+"/"+c.Lang).add(v.Urgent)
		if v.Urgent {
			r.falseAlarms = append(r.falseAlarms, fmt.Sprintf("%s (%s, %s): %s %q: %q", c.ID, c.Set, c.Lang, v.Category, v.Evidence, clip(c.Text)))
		}
	}
	return r
}

func clip(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		return s[:160] + "..."
	}
	return s
}

// logNumbers logs the summary: recall overall, per category, language and
// channel; category agreement; false positives per set and language.
func (r evalReport) logNumbers(t *testing.T, name string) {
	t.Helper()
	t.Logf("%s: recall %v, category agreement %v, hard-negative FP %v, routine FP %v",
		name, r.recall, r.catAgree, r.hardFP, r.routineFP)
	for _, k := range sortedKeys(r.recallBy) {
		t.Logf("  recall %-22s %v", k, r.recallBy[k])
	}
	for _, k := range sortedKeys(r.langRecall) {
		t.Logf("  recall lang %-17s %v", k, r.langRecall[k])
	}
	for _, k := range sortedKeys(r.chanRecall) {
		t.Logf("  recall channel %-14s %v", k, r.chanRecall[k])
	}
	for _, k := range sortedKeys(r.fpBy) {
		t.Logf("  false positives %-13s %v", k, r.fpBy[k])
	}
	t.Logf("  misses: %d with evidence below the threshold, %d with none; ids: %s",
		r.weakMisses, len(r.missIDs)-r.weakMisses, strings.Join(r.missIDs, " "))
}

// logDetails logs each miss, false alarm and other category, with text.
func (r evalReport) logDetails(t *testing.T) {
	t.Helper()
	for _, m := range r.misses {
		t.Logf("  MISS %s", m)
	}
	for _, m := range r.falseAlarms {
		t.Logf("  FALSE ALARM %s", m)
	}
	for _, m := range r.wrongCat {
		t.Logf("  CATEGORY %s", m)
	}
}

// TestTriageEval scores the triage on the labelled set and fails when it
// misses the aims: recall ≥ 0.98, false positives ≤ 15 % on hard negatives
// and ≤ 3 % on other routine messages. Run with -v for the numbers.
func TestTriageEval(t *testing.T) {
	cases := readEval(t, "eval.jsonl")
	r := evaluate(mustTriage(t, "URGENT", nil), cases)
	r.logNumbers(t, "eval")
	r.logDetails(t)
	if v := r.recall.value(); v < aimRecall {
		t.Errorf("eval recall %v is below %.2f", r.recall, aimRecall)
	}
	if v := r.hardFP.value(); v > aimHardNegFP {
		t.Errorf("eval hard-negative false positives %v are above %.2f", r.hardFP, aimHardNegFP)
	}
	if v := r.routineFP.value(); v > aimRoutineFP {
		t.Errorf("eval routine false positives %v are above %.2f", r.routineFP, aimRoutineFP)
	}
}

// TestTriageHoldout scores the earlier held-out sets with the built-in
// model, which has since been trained on them: a regression guard. The
// honest measure of new messages is TestTriageCrossValidation.
func TestTriageHoldout(t *testing.T) {
	for _, name := range []string{"holdout.jsonl", "holdout2.jsonl"} {
		cases := readEval(t, name)
		r := evaluate(mustTriage(t, "URGENT", nil), cases)
		r.logNumbers(t, strings.TrimSuffix(name, ".jsonl"))
		if v := r.recall.value(); v < aimHoldoutRecall {
			t.Errorf("%s recall %v is below %.2f", name, r.recall, aimHoldoutRecall)
		}
	}
}
