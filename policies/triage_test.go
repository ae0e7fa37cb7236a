package policies

import (
	"slices"
	"strings"
	"sync"
	"testing"
)

func mustTriage(t *testing.T, keyword string, extra map[string][]string) *Triage {
	t.Helper()
	tr, err := NewTriage(keyword, extra)
	if err != nil {
		t.Fatalf("NewTriage: %v", err)
	}
	return tr
}

func TestClassify(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	tests := []struct {
		name     string
		subject  string
		body     string
		category string // "" for routine
		evidence string // one phrase that must be in Evidence, when set
	}{
		// suicide
		{"kill myself", "", "I think I'm going to kill myself tonight", CategorySuicide, "kill myself"},
		{"kms slang", "", "honestly i just wanna kms", CategorySuicide, "kms"},
		{"leetspeak", "", "gonna k1ll mys3lf", CategorySuicide, "kill myself"},
		{"split self", "", "I want to kill my self", CategorySuicide, "kill myself"},
		{"unalive", "", "thinking about how to unalive myself", CategorySuicide, "unalive"},
		{"end it all", "", "I just want to end it all.", CategorySuicide, "end it all"},
		{"don't wake up", "", "I dont want to wake up tomorrow", CategorySuicide, "don't want to wake up"},
		{"do not wake up", "", "I do not want to wake up", CategorySuicide, "don't want to wake up"},
		{"curly apostrophe", "", "I don’t want to be alive", CategorySuicide, "don't want to be alive"},
		{"better off without me", "", "Everyone's better off without me", CategorySuicide, "better off without me"},
		{"took all my pills", "", "I took all my pills", CategorySuicide, "took all my pills"},
		{"suicidal shouting", "", "SUICIDAL AGAIN!!!", CategorySuicide, "suicidal"},
		{"suicide in the subject", "Suicide", "Can we talk?", CategorySuicide, "suicide"},
		{"negated still urgent", "", "I'm not suicidal, just exhausted", CategorySuicide, "suicidal"},
		{"wanna die", "", "i wanna die", CategorySuicide, "want to die"},
		// self-harm
		{"cut myself", "", "I cut myself again last night", CategorySelfHarm, "cut myself"},
		{"self-harm hyphen", "", "the self-harm urges are back", CategorySelfHarm, "self harm"},
		{"selfharm one word", "", "#selfharm", CategorySelfHarm, "selfharm"},
		{"burning", "", "I've been burning myself", CategorySelfHarm, "burning myself"},
		// harm to others
		{"going to hurt him", "", "I'm going to hurt him when he gets home", CategoryHarmToOthers, "going to hurt him"},
		{"gonna hurt", "", "im gonna hurt my brother", CategoryHarmToOthers, "going to hurt my brother"},
		{"kill her", "", "I swear I will kill her", CategoryHarmToOthers, "kill her"},
		{"homicidal", "", "feeling homicidal", CategoryHarmToOthers, "homicidal"},
		// abuse
		{"he hit me", "", "He hit me again.", CategoryAbuse, "he hit me"},
		{"my husband", "", "my husband choked me last night", CategoryAbuse, "my husband choked me"},
		{"present tense", "", "he's hurting me", CategoryAbuse, "he's hurting me"},
		{"he is killing me", "", "my husband is killing me", CategoryAbuse, "my husband is killing me"},
		{"scared to go home", "", "I'm scared to go home", CategoryAbuse, "scared to go home"},
		{"hit me with a belt", "", "he hit me with a belt", CategoryAbuse, "he hit me"},
		{"in jest is still urgent", "", "my mom is gonna kill me when she sees my grades", CategoryAbuse, "my mom is going to kill me"},
		{"he'll kill me", "", "If I leave he'll kill me", CategoryAbuse, "he'll kill me"},
		// medical
		{"chest pain", "", "Having chest pain and sweating", CategoryMedical, "chest pain"},
		{"can't breathe", "", "I can't breathe", CategoryMedical, "can't breathe"},
		{"cannot breathe", "", "I cannot breathe", CategoryMedical, "can't breathe"},
		{"overdose", "", "I think I overdosed", CategoryMedical, "overdosed"},
		{"OD'd", "", "i OD'd on my meds", CategoryMedical, "i od'd"},
		{"emergency room", "", "on my way to the emergency room", CategoryMedical, "emergency room"},
		// crisis
		{"can't keep myself safe", "", "I can't keep myself safe right now", CategoryCrisis, "can't keep myself safe"},
		{"voices", "", "the voices are telling me to do things", CategoryCrisis, "voices are telling me"},
		{"emergency", "", "EMERGENCY please call", CategoryCrisis, "emergency"},
		{"can't do this", "", "I can't do this anymore", CategoryCrisis, "can't do this anymore"},
		{"panic attack", "", "having a panic attack, feel like I'm dying", CategoryCrisis, "feel like i'm dying"},
		// the urgent keyword
		{"keyword first", "", "URGENT please read", CategoryMarkedUrgent, "urgent"},
		{"keyword any case", "", "this is urgent", CategoryMarkedUrgent, "urgent"},
		{"keyword with punctuation", "", "Urgent: need to talk", CategoryMarkedUrgent, "urgent"},
		{"keyword in subject", "URGENT", "please read", CategoryMarkedUrgent, "urgent"},
		{"keyword loses to suicide", "URGENT", "I want to die", CategorySuicide, "urgent"},
		{"keyword in a reply subject", "Re: URGENT", "", CategoryMarkedUrgent, "urgent"},
		{"not urgent does not hide the rest", "", "not urgent but I've been thinking of ending my life", CategorySuicide, "ending my life"},
		// routine
		{"reschedule", "", "Can we move Tuesday to 3pm?", "", ""},
		{"thanks", "", "Thank you for today, that helped a lot.", "", ""},
		{"traffic idiom", "", "Sorry I'm late, this traffic is killing me", "", ""},
		{"work idiom", "", "Work is killing me this week lol", "", ""},
		{"you're killing me", "", "haha you're killing me", "", ""},
		{"dying to", "", "I'm dying to tell you about the trip!", "", ""},
		{"killed it", "", "I killed it at my presentation", "", ""},
		{"not urgent", "", "Not urgent, but can we talk about fees?", "", ""},
		{"non-urgent", "", "Non-urgent question about invoices", "", ""},
		{"not an emergency", "", "This is not an emergency, just a question", "", ""},
		{"urgently is not the keyword", "", "I urgently need the invoice", "", ""},
		{"stroke of luck", "", "What a stroke of luck, I got the job", "", ""},
		{"numbers stay numbers", "", "Call me at 555 0134 after 5", "", ""},
		{"odd", "", "That felt odd", "", ""},
		{"hit me up", "", "she hit me up last night about the party", "", ""},
		{"it hit me", "", "it hit me that I never said thank you", "", ""},
		{"my back", "", "My back is killing me", "", ""},
		{"hurt feelings", "", "I hurt her feelings and feel awful", "", ""},
		{"asks for the crisis line", "", "Can you send me the crisis line number?", "", ""},
		{"quoted ack", "", "See you then!\n\n> If it can't wait, start a text with URGENT.\n> In an emergency, call 911.", "", ""},
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
			if !slices.Contains(v.Evidence, tt.evidence) {
				t.Fatalf("Classify(%q, %q).Evidence = %q, want it to contain %q", tt.subject, tt.body, v.Evidence, tt.evidence)
			}
			if v.Confidence <= 0 || v.Confidence > 1 {
				t.Fatalf("Confidence = %v, want in (0, 1]", v.Confidence)
			}
			for _, e := range v.Evidence {
				if e != strings.ToLower(e) {
					t.Fatalf("evidence %q is not lower case", e)
				}
			}
		})
	}
}

func TestClassifyDetails(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	t.Run("evidence in message order, no overlaps", func(t *testing.T) {
		v := tr.Classify("", "I want to unalive myself, I already took all my pills")
		want := []string{"unalive", "took all my pills"}
		if !slices.Equal(v.Evidence, want) {
			t.Fatalf("Evidence = %q, want %q", v.Evidence, want)
		}
	})
	t.Run("negation lowers confidence", func(t *testing.T) {
		plain := tr.Classify("", "I am suicidal")
		negated := tr.Classify("", "I am not suicidal")
		if !negated.Urgent || negated.Confidence >= plain.Confidence {
			t.Fatalf("negated %+v, plain %+v: want both urgent, negated less confident", negated, plain)
		}
	})
	t.Run("more evidence, more confidence", func(t *testing.T) {
		one := tr.Classify("", "I want to die")
		two := tr.Classify("", "I want to die. I wrote a note.")
		if two.Confidence <= one.Confidence {
			t.Fatalf("one %v, two %v", one.Confidence, two.Confidence)
		}
	})
	t.Run("keyword is certain", func(t *testing.T) {
		if v := tr.Classify("", "URGENT"); v.Confidence != 1 {
			t.Fatalf("Confidence = %v, want 1", v.Confidence)
		}
	})
	t.Run("no phrase spans subject and body", func(t *testing.T) {
		if v := tr.Classify("I want to", "die laughing at this"); v.Urgent {
			t.Fatalf("%+v", v)
		}
	})
}

func TestNewTriage(t *testing.T) {
	t.Run("custom keyword", func(t *testing.T) {
		tr := mustTriage(t, "ASAP", nil)
		if v := tr.Classify("", "asap please"); v.Category != CategoryMarkedUrgent {
			t.Fatalf("%+v", v)
		}
		if v := tr.Classify("", "urgent please"); v.Urgent {
			t.Fatalf("the default keyword must not count: %+v", v)
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
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"I'm gonna K1LL my$elf!!", "im going to kill myself"},
		{"  Don’t   want-to  WAKE up ", "dont want to wake up"},
		{"I do not wanna", "i dont want to"},
		{"call 988 or 911", "call 988 or 911"},
		{"h@te", "hate"},
		{"u are", "youre"},
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

func TestClassifyConcurrent(t *testing.T) {
	tr := mustTriage(t, "URGENT", nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if v := tr.Classify("", "I want to die"); v.Category != CategorySuicide {
					t.Errorf("%+v", v)
					return
				}
			}
		})
	}
	wg.Wait()
}
