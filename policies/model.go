package policies

import (
	"cmp"
	_ "embed"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The model is the triage's second reader. The lexicon's rules recognise
// the ways of saying things that someone wrote down; people keep finding
// new ones. So a message the rules leave routine is also scored by a linear
// model over its words and word pairs (read the way the rules read them),
// trained on the labelled messages in testdata/triage and on the lexicon's
// own example and not lines. When it is confident enough that the message
// belongs to a risk category, the message is urgent: the rules can only
// add urgency, the model can only add urgency, never take it away.
//
// triage_model.txt is generated: go test ./policies -run TestTriageModelFile -update

//go:embed triage_model.txt
var builtinModel []byte

// loadModel parses the built-in model once; it is read-only after.
var loadModel = sync.OnceValues(func() (*model, error) { return parseModel(builtinModel) })

// modelClasses are the model's outputs: routine, then the risk categories
// (the client's keyword is the rules' job).
var modelClasses = []string{"routine", CategorySuicide, CategorySelfHarm, CategoryHarmToOthers,
	CategoryAbuse, CategoryMedical, CategoryCrisis}

const nClasses = 7

// modelMinWords: shorter messages are the rules' alone. A few words give
// the model too little to go on (cross-validation: fewer false alarms on
// short harmless texts, no lost recall).
const modelMinWords = 8

// defaultModelThreshold is how sure the model must be that a message is not
// routine before it makes it urgent. Measured by cross-validation over the
// labelled sets (see TestTriageCrossValidation).
const defaultModelThreshold = 0.6

type model struct {
	bias  [nClasses]float64
	feats map[uint64]modelFeature
}

type modelFeature struct {
	name string // "word" or "word word", for evidence
	w    [nClasses]float32
}

// parseModel reads triage_model.txt: "bias" and then one feature per
// line, tab-separated: the words, then a weight per class.
func parseModel(b []byte) (*model, error) {
	m := &model{feats: map[uint64]modelFeature{}}
	for n, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != nClasses+1 {
			return nil, fmt.Errorf("triage model line %d: %d fields, want %d", n+1, len(f), nClasses+1)
		}
		var w [nClasses]float64
		for i, s := range f[1:] {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("triage model line %d: %v", n+1, err)
			}
			w[i] = v
		}
		if f[0] == "bias" {
			m.bias = w
			continue
		}
		var mf modelFeature
		mf.name = f[0]
		for i := range w {
			mf.w[i] = float32(w[i])
		}
		m.feats[featureHash(strings.Fields(f[0]))] = mf
	}
	return m, nil
}

// featureHash is FNV-1a over the words, with a separator between them.
func featureHash(words []string) uint64 {
	h := uint64(14695981039346656037)
	for i, w := range words {
		if i > 0 {
			h = (h ^ 0xff) * 1099511628211
		}
		for j := 0; j < len(w); j++ {
			h = (h ^ uint64(w[j])) * 1099511628211
		}
	}
	return h
}

// features appends the hashes of a message's words and pairs of
// neighbouring words (not across the subject and the body), each once.
func features(toks []token, out []uint64) []uint64 {
	var pair [2]string
	for i, t := range toks {
		pair[1] = t.text
		out = append(out, featureHash(pair[1:]))
		if i > 0 && toks[i-1].part == t.part {
			pair[0] = toks[i-1].text
			out = append(out, featureHash(pair[:]))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// windowSentences: a long message is also read a few sentences at a time,
// so that one risky sentence in a long, cheerful email is not drowned out.
const windowSentences = 3

// windowThreshold is the model's threshold for a part of a long message:
// higher than for a whole one, because a few sentences of a safe email
// taken out of it can sound worse than they are (cross-validation: +1
// point of recall for under +2 points of routine false alarms).
const windowThreshold = 0.8

// windows calls f with each run of windowSentences sentences of a message
// that has more, until f returns true.
func windows(toks []token, f func([]token) bool) bool {
	if len(toks) == 0 || toks[len(toks)-1].sent-toks[0].sent < windowSentences {
		return false
	}
	for lo := 0; lo < len(toks); {
		hi := lo
		for hi < len(toks) && toks[hi].sent-toks[lo].sent < windowSentences {
			hi++
		}
		if f(toks[lo:hi]) {
			return true
		}
		if hi == len(toks) {
			return false
		}
		next := lo
		for toks[next].sent == toks[lo].sent {
			next++
		}
		lo = next
	}
	return false
}

// probabilities returns the model's probability of each class.
func (m *model) probabilities(hashes []uint64) [nClasses]float64 {
	z := m.bias
	for _, h := range hashes {
		if f, ok := m.feats[h]; ok {
			for c := range z {
				z[c] += float64(f.w[c])
			}
		}
	}
	softmax(&z)
	return z
}

// softmax turns scores into probabilities, in place.
func softmax(z *[nClasses]float64) {
	top := slices.Max(z[:])
	sum := 0.0
	for c := range z {
		z[c] = math.Exp(z[c] - top)
		sum += z[c]
	}
	for c := range z {
		z[c] /= sum
	}
}

// judge is the model's verdict: urgent when the probability that the
// message is not routine reaches the threshold, with the likeliest risk
// category and the words that pointed to it most.
func (m *model) judge(hashes []uint64, threshold float64) Verdict {
	p := m.probabilities(hashes)
	risk := 1 - p[0]
	if risk < threshold {
		return Verdict{}
	}
	best := 1
	for c := 2; c < nClasses; c++ {
		if p[c] > p[best] {
			best = c
		}
	}
	type contrib struct {
		name string
		w    float32
	}
	var top []contrib
	for _, h := range hashes {
		if f, ok := m.feats[h]; ok && f.w[best]-f.w[0] > 0.2 {
			top = append(top, contrib{f.name, f.w[best] - f.w[0]})
		}
	}
	slices.SortFunc(top, func(a, b contrib) int {
		return cmp.Or(cmp.Compare(b.w, a.w), strings.Compare(a.name, b.name))
	})
	v := Verdict{Urgent: true, Category: modelClasses[best], Confidence: math.Round(risk*100) / 100}
	for _, c := range top[:min(len(top), 3)] {
		v.Evidence = append(v.Evidence, c.name)
	}
	return v
}
