package policies

import "testing"

func TestSMSKeyword(t *testing.T) {
	tests := []struct {
		body string
		want Keyword
	}{
		{"STOP", KeywordStop},
		{"stop", KeywordStop},
		{"sToP", KeywordStop},
		{"  Stop.  ", KeywordStop},
		{"STOP!", KeywordStop},
		{"stop!!", KeywordStop},
		{"\tstop\n", KeywordStop},
		{"STOPALL", KeywordStop},
		{"unsubscribe", KeywordStop},
		{"Cancel", KeywordStop},
		{"end", KeywordStop},
		{"quit", KeywordStop},
		{"revoke", KeywordStop},
		{"optout", KeywordStop},
		{"START", KeywordStart},
		{"yes", KeywordStart},
		{"Unstop", KeywordStart},
		{"HELP", KeywordHelp},
		{"help?", KeywordNone},
		{"info", KeywordHelp},
		{"stop texting me", KeywordNone},
		{"stop please", KeywordNone},
		{"please stop", KeywordNone},
		{"yes please", KeywordNone},
		{"I need help", KeywordNone},
		{"opt out", KeywordNone},
		{"s t o p", KeywordNone},
		{"", KeywordNone},
		{".", KeywordNone},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			if got := SMSKeyword(tt.body); got != tt.want {
				t.Fatalf("SMSKeyword(%q) = %v, want %v", tt.body, got, tt.want)
			}
		})
	}
}

func TestOptOutType(t *testing.T) {
	tests := []struct {
		in   string
		want Keyword
	}{
		{"STOP", KeywordStop},
		{"stop", KeywordStop},
		{"START", KeywordStart},
		{"Start", KeywordStart},
		{"HELP", KeywordHelp},
		{"help", KeywordHelp},
		{"", KeywordNone},
		{"UNSUBSCRIBE", KeywordNone}, // Twilio sends only the three types
		{"other", KeywordNone},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := OptOutType(tt.in); got != tt.want {
				t.Fatalf("OptOutType(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
