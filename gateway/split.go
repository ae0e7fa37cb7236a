package gateway

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/therapistinbox/gateway/policies"
)

// SMS relays.
const (
	// DefaultRelayMaxSegments is Practice.RelayMaxSegments when zero: a
	// longer relay by text is refused (10 segments is also Twilio's 1,600
	// character limit).
	DefaultRelayMaxSegments = 10
	// relayPartSegments is the most segments one text of a split relay
	// takes: handsets join two reliably, longer chains less so.
	relayPartSegments = 2
)

// splitSMS cuts text into texts of at most relayPartSegments segments
// each, at paragraph, sentence or word boundaries where it can, each
// numbered "(k/n) " when there is more than one. Text that fits in
// relayPartSegments is returned as it is.
func splitSMS(text string) []string {
	text = strings.TrimSpace(text)
	if n, _ := policies.Segments(text); n <= relayPartSegments {
		return []string{text}
	}
	// Pack as if every part carried the widest number, so the real ones
	// always fit.
	fits := func(s string) bool {
		n, _ := policies.Segments("(99/99) " + s)
		return n <= relayPartSegments
	}
	var parts []string
	cur := ""
	flush := func() {
		if s := strings.TrimSpace(cur); s != "" {
			parts = append(parts, s)
		}
		cur = ""
	}
	for _, piece := range pieces(text) {
		if fits(cur + piece) {
			cur += piece
			continue
		}
		flush()
		if fits(piece) {
			cur = piece
			continue
		}
		// A sentence too long for one part goes word by word, and a word
		// too long (a link) rune by rune.
		for _, w := range splitKeep(piece, unicode.IsSpace) {
			if fits(cur + w) {
				cur += w
				continue
			}
			flush()
			for _, r := range w {
				if !fits(cur + string(r)) {
					flush()
				}
				cur += string(r)
			}
		}
	}
	flush()
	if len(parts) > 1 {
		for i := range parts {
			parts[i] = fmt.Sprintf("(%d/%d) %s", i+1, len(parts), parts[i])
		}
	}
	return parts
}

// pieces splits text after each sentence end (., !, ? or a line break
// followed by white space), keeping every character.
func pieces(text string) []string {
	var out []string
	rs := []rune(text)
	start := 0
	for i := 0; i < len(rs); i++ {
		end := rs[i] == '\n' || ((rs[i] == '.' || rs[i] == '!' || rs[i] == '?') && i+1 < len(rs) && unicode.IsSpace(rs[i+1]))
		if !end {
			continue
		}
		j := i + 1
		for j < len(rs) && unicode.IsSpace(rs[j]) {
			j++
		}
		out = append(out, string(rs[start:j]))
		start, i = j, j-1
	}
	if start < len(rs) {
		out = append(out, string(rs[start:]))
	}
	return out
}

// splitKeep splits s after each run of separators, keeping them.
func splitKeep(s string, sep func(rune) bool) []string {
	var out []string
	start := 0
	inSep := false
	for i, r := range s {
		if sep(r) {
			inSep = true
			continue
		}
		if inSep {
			out = append(out, s[start:i])
			start = i
			inSep = false
		}
	}
	return append(out, s[start:])
}
