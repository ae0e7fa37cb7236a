package policies

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The training: a softmax regression over words and word pairs, by
// stochastic gradient descent in a fixed order, so the same data gives the
// same model.
const (
	trainEpochs = 30
	trainRate   = 0.1
	trainL2     = 1e-4
	trainMinDF  = 2    // a feature must appear in this many messages
	trainKeep   = 0.02 // features whose weights all stay this close to zero are dropped
)

// trainRoutineWeight counts a routine example this many times: most of what
// a practice receives is routine, far more than in the labelled sets.
var trainRoutineWeight = 3.0

// example is one training message: its features and class.
type example struct {
	feats []string
	class int
}

func classOf(category string) int {
	if category == "" {
		return 0
	}
	return slices.Index(modelClasses, category) // -1: not a model class
}

// featureNames are features() as text: words and pairs of neighbouring words.
func featureNames(toks []token) []string {
	var out []string
	for i, t := range toks {
		if strings.ContainsAny(t.text, " \t") {
			continue
		}
		out = append(out, t.text)
		if i > 0 && toks[i-1].part == t.part && !strings.ContainsAny(toks[i-1].text, " \t") {
			out = append(out, toks[i-1].text+" "+t.text)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// labelled is one training message.
type labelled struct{ subject, body, category string }

// trainingTexts are the labelled sets (all but skip), the probes and the
// lexicon's example and not lines.
func trainingTexts(t testing.TB, tr *Triage, skip string) []labelled {
	t.Helper()
	var out []labelled
	for _, name := range labelledSets(t) {
		if name == skip {
			continue
		}
		for _, c := range readEval(t, name) {
			cat := ""
			if c.Urgent {
				cat = c.Category
			}
			out = append(out, labelled{c.Subject, c.Text, cat})
		}
	}
	if skip != "probes" {
		for _, l := range probeRisk {
			cat, text, _ := strings.Cut(l, "|")
			out = append(out, labelled{"", text, cat})
		}
		for _, text := range probeRoutine {
			out = append(out, labelled{"", text, ""})
		}
	}
	for _, r := range tr.lx.rules {
		for _, e := range r.examples {
			out = append(out, labelled{"", e, r.category})
		}
		for _, e := range r.nots {
			out = append(out, labelled{"", e, ""})
		}
	}
	return out
}

// trainingExamples reads the training texts as the triage reads them.
func trainingExamples(t testing.TB, tr *Triage, skip string) []example {
	sc := newScratch(tr.lx)
	var out []example
	for _, l := range trainingTexts(t, tr, skip) {
		c := classOf(l.category)
		if c < 0 {
			continue
		}
		toks := sc.tokens(l.subject, unquote(l.body))
		out = append(out, example{featureNames(toks), c})
		if c == 0 {
			// Every part of a routine message is routine too: the
			// model reads long messages a few sentences at a time.
			windows(toks, func(w []token) bool {
				if len(w) >= modelMinWords {
					out = append(out, example{featureNames(w), 0})
				}
				return false
			})
		}
	}
	return out
}

func labelledSets(t testing.TB) []string {
	names, err := filepath.Glob(filepath.Join("testdata", "triage", "*.jsonl"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no labelled sets: %v", err)
	}
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	slices.Sort(names)
	return names
}

// train fits the model; weights are per feature name.
func train(data []example) (bias [nClasses]float64, w map[string]*[nClasses]float64) {
	df := map[string]int{}
	for _, e := range data {
		for _, f := range e.feats {
			df[f]++
		}
	}
	w = map[string]*[nClasses]float64{}
	for f, n := range df {
		if n >= trainMinDF {
			w[f] = new([nClasses]float64)
		}
	}
	// Each example's weights, looked up once.
	vecs := make([][]*[nClasses]float64, len(data))
	for i, e := range data {
		for _, f := range e.feats {
			if v := w[f]; v != nil {
				vecs[i] = append(vecs[i], v)
			}
		}
	}
	order := make([]int, len(data))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var p [nClasses]float64
	for range trainEpochs {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			class := data[i].class
			p = bias
			for _, v := range vecs[i] {
				for c := range p {
					p[c] += v[c]
				}
			}
			softmax(&p)
			for c := range p {
				g := p[c]
				if c == class {
					g--
				}
				if class == 0 {
					g *= trainRoutineWeight
				}
				bias[c] -= trainRate * g
				for _, v := range vecs[i] {
					v[c] -= trainRate * (g + trainL2*v[c])
				}
			}
		}
	}
	return bias, w
}

// modelText writes a trained model in triage_model.txt's format.
func modelText(bias [nClasses]float64, w map[string]*[nClasses]float64, header string) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	row := func(name string, v [nClasses]float64) {
		b.WriteString(name)
		for _, x := range v {
			b.WriteByte('\t')
			b.WriteString(strconv.FormatFloat(x, 'f', 3, 64))
		}
		b.WriteByte('\n')
	}
	row("bias", bias)
	names := make([]string, 0, len(w))
	for f, v := range w {
		if slices.ContainsFunc(v[:], func(x float64) bool { return math.Abs(x) >= trainKeep }) {
			names = append(names, f)
		}
	}
	slices.Sort(names)
	for _, f := range names {
		row(f, *w[f])
	}
	return b.Bytes()
}

// dataHash identifies what a model was trained on, and how.
func dataHash(t testing.TB, tr *Triage) string {
	h := sha256.New()
	for _, l := range trainingTexts(t, tr, "") {
		fmt.Fprintf(h, "%q %q %q\n", l.subject, l.body, l.category)
	}
	fmt.Fprintf(h, "epochs %d rate %g l2 %g mindf %d keep %g routine %g\n", trainEpochs, trainRate, trainL2, trainMinDF, trainKeep, trainRoutineWeight)
	return fmt.Sprintf("%x", h.Sum(nil))
}

const modelHeader = `# The triage's second reader, generated from testdata/triage/*.jsonl, the
# probes in triage_probe_test.go and the lexicon's example and not lines; do
# not edit. Retrain after changing them:
#   go test ./policies -run TestTriageModelFile -update
# Each line: words, then a weight per class (routine, suicide, self-harm,
# harm-to-others, abuse, medical-emergency, acute-crisis).
`

// TestTriageModelFile checks that the built-in model was trained on the
// labelled sets as they are now, and retrains it with -update.
func TestTriageModelFile(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	want := "# data sha256 " + dataHash(t, tr) + "\n"
	if *update {
		bias, w := train(trainingExamples(t, tr, ""))
		if err := os.WriteFile("triage_model.txt", modelText(bias, w, modelHeader+want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Contains(builtinModel, []byte(want)) {
		t.Fatalf("triage_model.txt was not trained on the labelled sets as they are now; run: go test ./policies -run TestTriageModelFile -update")
	}
}

// TestTriageCrossValidation is the honest measure of how the triage does
// on messages it was not built from: each labelled set in turn is left out
// of the model's training and scored. The blind sets were written by people
// who never saw the lexicon, and neither the lexicon nor the model was
// tuned on them, so their numbers are what to expect from new messages.
func TestTriageCrossValidation(t *testing.T) {
	if testing.Short() || raceDetector {
		// Pure arithmetic, a model per labelled set: the race detector
		// only makes it slow (and starves the other packages' tests).
		t.Skip("trains a model per labelled set; run without -short and -race")
	}
	base := mustTriage(t, "URGENT", nil)
	var all, blind evalReport
	for _, name := range labelledSets(t) {
		bias, w := train(trainingExamples(t, base, name))
		m, err := parseModel(modelText(bias, w, ""))
		if err != nil {
			t.Fatal(err)
		}
		tr := mustTriage(t, "URGENT", nil)
		tr.model = m
		r := evaluate(tr, readEval(t, name))
		r.logNumbers(t, strings.TrimSuffix(name, ".jsonl")+" (left out)")
		all.add(r)
		if strings.HasPrefix(name, "blind") {
			blind.add(r)
		}
	}
	t.Logf("all sets, each left out: recall %v, hard-negative FP %v, routine FP %v", all.recall, all.hardFP, all.routineFP)
	t.Logf("blind sets, each left out: recall %v, hard-negative FP %v, routine FP %v", blind.recall, blind.hardFP, blind.routineFP)
	// Guards against regressions, set just outside the measured values
	// (recall 0.958, 15.0 %, 3.2 %); the aims are 0.98, 15 % and 3 %.
	if v := blind.recall.value(); v < cvFloorRecall {
		t.Errorf("blind sets' recall %v is below %.2f", blind.recall, cvFloorRecall)
	}
	if v := blind.hardFP.value(); v > cvCeilHardFP {
		t.Errorf("blind sets' hard-negative false positives %v are above %.2f", blind.hardFP, cvCeilHardFP)
	}
	if v := blind.routineFP.value(); v > cvCeilRoutineFP {
		t.Errorf("blind sets' routine false positives %v are above %.2f", blind.routineFP, cvCeilRoutineFP)
	}
}

const (
	cvFloorRecall   = 0.94
	cvCeilHardFP    = 0.17
	cvCeilRoutineFP = 0.05
)

// add pools another report's recall and false positives.
func (r *evalReport) add(o evalReport) {
	for _, p := range [][2]*ratio{{&r.recall, &o.recall}, {&r.hardFP, &o.hardFP}, {&r.routineFP, &o.routineFP}} {
		p[0].n += p[1].n
		p[0].of += p[1].of
	}
}
