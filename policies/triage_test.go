package policies

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// rulesOnly is a triage without the model: for tests of the rules' mechanics.
func rulesOnly(t *testing.T, keyword string, extra map[string][]string) *Triage {
	t.Helper()
	tr, err := NewTriage(keyword, extra, []byte("setting model-threshold 1\n"))
	if err != nil {
		t.Fatalf("NewTriage: %v", err)
	}
	return tr
}

func mustTriage(t *testing.T, keyword string, extra map[string][]string) *Triage {
	t.Helper()
	tr, err := NewTriage(keyword, extra)
	if err != nil {
		t.Fatalf("NewTriage: %v", err)
	}
	return tr
}

// TestClassify covers the forms people really write, in both languages.
// The lexicon's own examples (lexicon_test.go) cover every rule; these
// cover the reading of the text around them.
func TestClassify(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	tests := []struct {
		name     string
		subject  string
		body     string
		category string // "" for routine
		evidence string // one phrase that must be in Evidence, when set
	}{
		// Spelling, spacing and leetspeak.
		{"plain", "", "I think I'm going to kill myself tonight", CategorySuicide, "kill myself"},
		{"lower case no punctuation", "", "i want to die", CategorySuicide, "want to die"},
		{"shouting", "", "SUICIDAL AGAIN!!!", CategorySuicide, "suicidal"},
		{"leetspeak", "", "gonna k1ll mys3lf", CategorySuicide, "k1ll mys3lf"},
		{"digits first", "", "5u1c1d3 thoughts again", CategorySuicide, "5u1c1d3"},
		{"1 for l", "", "ki11 myse1f", CategorySuicide, "ki11 myse1f"},
		{"symbols", "", "$u!c!d3", CategorySuicide, "$u!c!d3"},
		{"letter spacing", "", "cant stop thinking about how to k i l l  m y s e l f", CategorySuicide, "k i l l m y s e l f"},
		{"dotted", "", "k.i.l.l m.y.s.e.l.f", CategorySuicide, "k.i.l.l m.y.s.e.l.f"},
		{"hyphenated", "", "s-u-i-c-i-d-e", CategorySuicide, ""},
		{"zero-width space", "", "ki\u200bll my\u200bself", CategorySuicide, ""},
		{"fullwidth", "", "ｋｉｌｌ ｍｙｓｅｌｆ", CategorySuicide, ""},
		{"stretched", "", "i want to diiiiie", CategorySuicide, "want to diiiiie"},
		{"typo", "", "i want to kil myslef", CategorySuicide, "kil myslef"},
		{"typo fuzzy", "", "feeling sucidal tonight", CategorySuicide, "sucidal"},
		{"curly apostrophe", "", "I don’t want to be alive", CategorySuicide, ""},
		{"split self", "", "I want to kill my self", CategorySuicide, "kill my self"},
		{"slang kms", "", "honestly i just wanna kms", CategorySuicide, "kms"},
		{"slang unalive", "", "gonna unalive myself if this keeps up tbh", CategorySuicide, ""},
		{"slang ctb", "", "thinking about ctb again", CategorySuicide, "ctb"},
		{"slang sh", "", "sh relapse after 4 months clean 😞", CategorySelfHarm, ""},
		{"emoji pills", "", "bye everyone 👋 💊💊💊", CategorySuicide, ""},
		{"emoji coffin", "", "⚰️🪦 thats where im headed and im ok with it. done fighting", CategorySuicide, "done fighting"},

		// Indirect and passive ideation.
		{"burden", "", "im such a burden on everybody, theyd be relieved if i was gone", CategorySuicide, ""},
		{"not wake up", "", "I dont want to wake up tomorrow", CategorySuicide, ""},
		{"no point", "", "whats the point anymore honestly", CategorySuicide, ""},
		{"cat away", "", "hey can you find someone to take my cat? I won't be around to look after her after this weekend", CategorySuicide, ""},
		{"keep myself safe", "", "I can't keep myself safe tonight", CategoryCrisis, ""},
		{"passive", "", "honestly I wouldn't mind if a bus hit me", CategorySuicide, ""},

		// Plans, means and places.
		{"counting pills", "", "i cant keep myself safe tonight. been counting my pills", CategorySuicide, "counting my pills"},
		{"dose and count", "", "ibuprofen 800mg x 12. is that bad", CategoryMedical, ""},
		{"dose split", "", "ibuprofen 800 mg x 12. is that bad", CategoryMedical, ""},
		{"antifreeze", "", "theres a jug of antifreeze in my trunk. i read its quiet", CategorySuicide, ""},
		{"bridge", "", "going to the bridge tonight after my shift", CategorySuicide, ""},
		{"garage top floor", "", "parked on the top floor of the parking garage. just sitting here looking over the edge", CategorySuicide, ""},
		{"gun", "", "my dads gun is in the hall closet and i keep thinking about using it on me", CategorySuicide, ""},

		// Others.
		{"threat", "", "he said I'm dead when he gets home", CategoryAbuse, ""},
		{"hit me", "", "He hit me again.", CategoryAbuse, "he hit me"},
		{"harm to others", "", "I'm going to kill him when he gets home. I mean it this time", CategoryHarmToOthers, ""},
		{"overdose in passing", "", "Had the best weekend!! Also I took like 20 advil saturday for my back and now my stomach is burning lol. Anyway see you monday!", CategoryMedical, ""},
		{"psychosis", "", "the voices keep telling me to go outside", CategoryCrisis, ""},

		// Spanish.
		{"es quiero morir", "", "me quiero morir, ya no puedo más", CategorySuicide, ""},
		{"es matarme", "", "quiero matarme", CategorySuicide, "matarme"},
		{"es accents dropped", "", "tomé todas las pastillas", CategoryMedical, "tomé todas las pastillas"},
		{"es pego", "", "mi esposo me pegó otra vez", CategoryAbuse, ""},
		{"es corte", "", "me corté otra vez anoche", CategorySelfHarm, ""},
		{"es puente", "", "me voy a tirar del puente esta noche", CategorySuicide, ""},
		{"es voces", "", "escucho voces que me dicen que haga cosas", CategoryCrisis, ""},

		// A risky sentence buried in a long routine email, with subject.
		{"buried", "Thursday", "Hi Dr. Okafor,\n\nJust a heads up for Thursday. My car is in the shop again so I'll take the bus.\n\nWork has been a lot. We're short two people.\n\nAlso I want you to know I took a whole bottle of my sleeping pills last night. I'm fine now I think.\n\nSee you Thursday,\nJordan", CategoryMedical, ""},
		{"risk in subject", "suicidal", "can we talk?", CategorySuicide, "suicidal"},

		// The client's keyword.
		{"keyword", "", "URGENT please call", CategoryMarkedUrgent, "urgent"},
		{"keyword any case", "", "this is uRgEnT", CategoryMarkedUrgent, "urgent"},
		{"keyword subject", "Re: URGENT", "see below", CategoryMarkedUrgent, "urgent"},
		{"keyword spanish", "", "URGENTE necesito cambiar mi cita", CategoryMarkedUrgent, "urgente"},
		{"keyword loses to risk", "URGENT", "I want to die", CategorySuicide, "urgent"},
		{"not urgent does not hide the rest", "", "not urgent but I've been thinking of ending my life", CategorySuicide, ""},

		// Routine: figures of speech, negations, benign contexts.
		{"traffic", "", "Sorry I'm late, this traffic is killing me", "", ""},
		{"dying to", "", "I'm dying to tell you about the trip!", "", ""},
		{"killed it", "", "KILLED IT at my presentation!!!", "", ""},
		{"organizer", "", "pills lined up in my weekly organizer like you suggested", "", ""},
		{"not suicidal", "", "I'm not suicidal, just exhausted", "", ""},
		{"never would", "", "I would never hurt myself, I promise", "", ""},
		{"third party past", "", "we talked about my dad's suicide in session and it helped", "", ""},
		{"quoted slang", "", "lol 'kms' is my group chat's favourite word this week", "", ""},
		{"not urgent", "", "Not urgent, but can we talk about fees?", "", ""},
		{"urgent care", "", "took my son to urgent care, he's fine, might be late", "", ""},
		{"es idiom", "", "me muero de ganas de contarte", "", ""},
		{"es idiom mata", "", "me mata el tráfico, llego tarde", "", ""},
		{"es hair", "", "me corté el pelo por fin jaja", "", ""},
		{"numbers stay numbers", "", "Call me at 555 0134 after 5", "", ""},
		{"odd", "", "That felt odd", "", ""},
		{"quoted reply", "", "See you then!\n\n> If it can't wait, start a text with URGENT.\n> If you are in immediate danger, call 911.", "", ""},
		{"attribution line", "", "Thanks!\nOn Mon, Jan 5, 2026 at 9:00 AM Clinic wrote:\n> I want to die is a phrase we listen for", "", ""},
		{"empty", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tr.Classify(tt.subject, tt.body)
			if v.Urgent != (tt.category != "") || v.Category != tt.category {
				t.Fatalf("Classify(%q, %q) = %+v, want category %q", tt.subject, tt.body, v, tt.category)
			}
			if tt.category == "" {
				if v.Confidence != 0 || v.Evidence != nil {
					t.Fatalf("routine verdict carries evidence: %+v", v)
				}
				return
			}
			if tt.evidence != "" && !slices.Contains(v.Evidence, tt.evidence) {
				t.Fatalf("Evidence = %q, want it to contain %q", v.Evidence, tt.evidence)
			}
			if v.Confidence < 0.5 || v.Confidence > 1 {
				t.Fatalf("Confidence = %v, want in [0.5, 1]", v.Confidence)
			}
			for _, e := range v.Evidence {
				if e != strings.ToLower(e) || e == "" {
					t.Fatalf("evidence %q is empty or not lower case", e)
				}
			}
		})
	}
}

func TestClassifyDetails(t *testing.T) {
	tr := rulesOnly(t, "URGENT", nil)
	t.Run("evidence quotes the client in message order", func(t *testing.T) {
		v := tr.Classify("", "I want to UNALIVE myself. I already took all my pills")
		want := []string{"unalive myself", "took all my pills"}
		if !slices.Equal(v.Evidence, want) {
			t.Fatalf("Evidence = %q, want %q", v.Evidence, want)
		}
	})
	t.Run("negation lowers confidence", func(t *testing.T) {
		plain := tr.Classify("", "I am suicidal")
		negated := tr.Classify("", "I am not suicidal")
		if !plain.Urgent || negated.Urgent {
			t.Fatalf("plain %+v, negated %+v: want plain urgent and the negation routine", plain, negated)
		}
		// A strong statement elsewhere still wins.
		if v := tr.Classify("", "I'm not suicidal, I just want to die"); v.Category != CategorySuicide {
			t.Fatalf("%+v", v)
		}
	})
	t.Run("a comma ends a negation", func(t *testing.T) {
		if v := tr.Classify("", "I'm not ok, I want to die"); v.Category != CategorySuicide {
			t.Fatalf("%+v", v)
		}
	})
	t.Run("more evidence, more confidence", func(t *testing.T) {
		one := tr.Classify("", "I want to die")
		two := tr.Classify("", "I want to die. I wrote goodbye letters.")
		if two.Confidence <= one.Confidence {
			t.Fatalf("one %v, two %v", one.Confidence, two.Confidence)
		}
	})
	t.Run("hints add up", func(t *testing.T) {
		if v := tr.Classify("", "thank you for everything"); v.Urgent {
			t.Fatalf("one hint alone: %+v", v)
		}
		if v := tr.Classify("", "thank you for everything. please don't blame yourself"); v.Category != CategorySuicide {
			t.Fatalf("two hints: %+v", v)
		}
	})
	t.Run("keyword is certain", func(t *testing.T) {
		if v := tr.Classify("", "URGENT"); v.Confidence != 1 {
			t.Fatalf("Confidence = %v, want 1", v.Confidence)
		}
	})
	t.Run("no pattern spans subject and body", func(t *testing.T) {
		if v := tr.Classify("I want to", "die"); v.Urgent {
			t.Fatalf("%+v", v)
		}
	})
	t.Run("no pattern spans sentences", func(t *testing.T) {
		if v := tr.Classify("", "I want to. Die Hard is on tonight"); v.Urgent {
			t.Fatalf("%+v", v)
		}
	})
	t.Run("precedence", func(t *testing.T) {
		if v := tr.Classify("", "I took 30 pills because I want to die"); v.Category != CategorySuicide {
			t.Fatalf("%+v", v)
		}
	})
}

func TestNewTriage(t *testing.T) {
	t.Run("custom keyword", func(t *testing.T) {
		tr := rulesOnly(t, "ASAP", nil)
		if v := tr.Classify("", "asap please"); v.Category != CategoryMarkedUrgent {
			t.Fatalf("%+v", v)
		}
		if v := tr.Classify("", "urgent please"); v.Urgent {
			t.Fatalf("the default keyword must not count: %+v", v)
		}
		if v := tr.Classify("", "not asap, whenever"); v.Urgent {
			t.Fatalf("guard: %+v", v)
		}
	})
	t.Run("extra phrases", func(t *testing.T) {
		tr := mustTriage(t, "URGENT", map[string][]string{
			CategoryCrisis:  {"Code Red"},
			CategorySuicide: {"catch the bus"},
		})
		if v := tr.Classify("", "it's code red here"); v.Category != CategoryCrisis || !slices.Contains(v.Evidence, "code red") {
			t.Fatalf("%+v", v)
		}
		if v := tr.Classify("", "gonna catch the bus"); v.Category != CategorySuicide {
			t.Fatalf("%+v", v)
		}
	})
	tests := []struct {
		name    string
		keyword string
		extra   map[string][]string
		want    []string
	}{
		{"unknown category", "URGENT", map[string][]string{"sadness": {"sad"}}, []string{`"sadness": unknown category; the categories are suicide`}},
		{"phrase with no words", "URGENT", map[string][]string{CategoryCrisis: {"ok", "!!!"}}, []string{`"acute-crisis" [1]: "!!!" has no words`}},
		{"empty keyword", " ", nil, []string{"urgent keyword is empty"}},
		{"two-word keyword", "very urgent", nil, []string{"one word"}},
		{"all together", "", map[string][]string{"x": nil, "y": nil}, []string{"keyword", `"x"`, `"y"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := NewTriage(tt.keyword, tt.extra)
			if err == nil || tr != nil {
				t.Fatalf("NewTriage = %v, %v; want an error", tr, err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not contain %q", err, want)
				}
			}
		})
	}
	t.Run("lexicon errors are LexiconErrors", func(t *testing.T) {
		_, err := NewTriage("URGENT", nil, []byte("rule a suicide 0.5\n  match: @nope\n"), []byte("set x = \n"))
		var le *LexiconError
		if !errors.As(err, &le) {
			t.Fatalf("%v", err)
		}
		for _, want := range []string{"extra lexicon 1 line 2", "extra lexicon 2 line 1"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%q does not contain %q", err, want)
			}
		}
	})
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"I'm gonna K1LL my$elf!!", "im gonna kill myself"},
		{"  Don’t   want-to  WAKE up ", "dont want to wake up"},
		{"call 988 or 911", "call 988 or 911"},
		{"h@te", "hate"},
		{"800mg and 2.5 ml", "800mg and 2.5 ml"},
		{"2nd 10pm", "2nd 10pm"},
		{"Tomé PASTILLAS, niño", "tome pastillas nino"},
		{"💊💊 ⚰️", "💊 💊 ⚰"},
		{"$ 5", "5"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := normalize(tt.in); got != tt.want {
				t.Fatalf("normalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestTokens checks the lexicon-aware reading: aliases, doses, sentences.
func TestTokens(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	read := func(s string) []token {
		sc := tr.pool.Get().(*scratch)
		defer tr.pool.Put(sc)
		return slices.Clone(sc.tokens("", s))
	}
	words := func(ts []token) string {
		var w []string
		for _, t := range ts {
			w = append(w, t.text)
		}
		return strings.Join(w, " ")
	}
	if got := words(read("I'm gonna do it, I am")); got != "im going to do it im" {
		t.Fatalf("aliases: %q", got)
	}
	ts := read("took 800 mg. then 3")
	if len(ts) != 4 || ts[1].kind != kindDose || ts[3].kind != kindNum || ts[1].sent == ts[2].sent {
		t.Fatalf("doses and sentences: %+v", ts)
	}
	if got := words(read("k i l l")); got != "kill" {
		t.Fatalf("unspace: %q", got)
	}
	if got := words(read("a b c d")); got != "a b c d" {
		t.Fatalf("letters that make no word stay: %q", got)
	}
}

func TestClassifyConcurrent(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				text, want := "I want to die", CategorySuicide
				if i%2 == 1 {
					text, want = "he hit me again", CategoryAbuse
				}
				if v := tr.Classify("", text); v.Category != want {
					t.Errorf("%+v", v)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkClassify classifies the labelled messages (SMS and long
// emails, English and Spanish) in turn on one goroutine.
func BenchmarkClassify(b *testing.B) {
	cases := readEval(b, "eval.jsonl")
	tr, err := NewTriage("URGENT", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c := &cases[i%len(cases)]
		tr.Classify(c.Subject, c.Text)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
