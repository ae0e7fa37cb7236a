package policies

import (
	"strings"
	"testing"
)

func TestSegments(t *testing.T) {
	const emoji = "😀" // U+1F600: two UTF-16 code units
	tests := []struct {
		name string
		text string
		n    int
		enc  string
	}{
		{"empty", "", 1, "GSM-7"},
		{"hello", "hello", 1, "GSM-7"},
		{"160 a", strings.Repeat("a", 160), 1, "GSM-7"},
		{"161 a", strings.Repeat("a", 161), 2, "GSM-7"},
		{"306 a", strings.Repeat("a", 306), 2, "GSM-7"},
		{"307 a", strings.Repeat("a", 307), 3, "GSM-7"},
		{"459 a", strings.Repeat("a", 459), 3, "GSM-7"},
		{"460 a", strings.Repeat("a", 460), 4, "GSM-7"},
		{"80 euro", strings.Repeat("€", 80), 1, "GSM-7"},
		{"81 euro", strings.Repeat("€", 81), 2, "GSM-7"},
		{"159 a and a caret", strings.Repeat("a", 159) + "^", 2, "GSM-7"},
		{"158 a and a brace", strings.Repeat("a", 158) + "{", 1, "GSM-7"},
		{"form feed is an extension", strings.Repeat("a", 159) + "\f", 2, "GSM-7"},
		{"every extension char", "^{}\\[]~|€\f", 1, "GSM-7"},
		{"whole basic set", gsmBasicSet, 1, "GSM-7"},
		{"accents in the table", "Ça va? Où est le café, señor? ¿Qué?", 1, "GSM-7"},
		{"greek capitals", "ΔΦΓΛΩΠΨΣΘΞ", 1, "GSM-7"},
		// An escape sequence is never split: 152 + 2 does not fit in
		// the first 153-septet part.
		{"euro straddles a part", strings.Repeat("a", 152) + "€" + strings.Repeat("a", 152), 3, "GSM-7"},
		{"curly quote", "I’m late", 1, "UCS-2"},
		{"70 curly quotes", strings.Repeat("’", 70), 1, "UCS-2"},
		{"71 curly quotes", strings.Repeat("’", 71), 2, "UCS-2"},
		{"one emoji", emoji, 1, "UCS-2"},
		{"69 a and a curly quote", strings.Repeat("a", 69) + "’", 1, "UCS-2"},
		{"70 a and a curly quote", strings.Repeat("a", 70) + "’", 2, "UCS-2"},
		{"68 a and an emoji", strings.Repeat("a", 68) + emoji, 1, "UCS-2"},
		{"69 a and an emoji", strings.Repeat("a", 69) + emoji, 2, "UCS-2"},
		{"35 emoji", strings.Repeat(emoji, 35), 1, "UCS-2"},
		{"36 emoji", strings.Repeat(emoji, 36), 2, "UCS-2"},
		{"134 units", strings.Repeat("a", 133) + "’", 2, "UCS-2"},
		{"135 units", strings.Repeat("a", 134) + "’", 3, "UCS-2"},
		// A surrogate pair is never split either.
		{"emoji straddles a part", strings.Repeat("a", 66) + emoji + strings.Repeat("a", 66), 3, "UCS-2"},
		{"grave accent is not gsm", "`", 1, "UCS-2"},
		{"lower c cedilla is not in the table", "ç", 1, "UCS-2"},
		{"tab is not gsm", "a\tb", 1, "UCS-2"},
		{"invalid utf-8", "a\xffb", 1, "UCS-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, enc := Segments(tt.text)
			if n != tt.n || enc != tt.enc {
				t.Fatalf("Segments(%q) = %d, %q, want %d, %q", tt.text, n, enc, tt.n, tt.enc)
			}
		})
	}
}

// TestSegmentsBasicSet checks the table's size: GSM 03.38 has 128 codes,
// one of which (0x1B) is the escape, and 10 extension characters here.
func TestSegmentsBasicSet(t *testing.T) {
	if got := len([]rune(gsmBasicSet)); got != 127 {
		t.Fatalf("basic set has %d characters, want 127", got)
	}
	if got := len(gsmCost); got != 137 {
		t.Fatalf("gsmCost has %d characters, want 137 (no duplicates)", got)
	}
}
