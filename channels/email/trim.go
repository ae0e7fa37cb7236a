package email

import (
	"regexp"
	"strings"
)

// Reply-trimming patterns. Each is matched against one trimmed line (or two
// joined lines for a wrapped attribution), case-insensitively.
var (
	// "On Mon, 3 Mar 2025 at 10:00, Jane <jane@example.org> wrote:" and its
	// Spanish, French, German, Portuguese, Italian and Dutch forms.
	attributionRE = regexp.MustCompile(`(?i)^(?:on\s.+\swrote|el\s.+\sescribi[óo]|le\s.+\sa\s+[ée]crit|` +
		`am\s.+\sschrieb.*|em\s.+\sescreveu|il\s.+\sha\s+scritto|op\s.+\sschreef.*)\s*:$`)
	attributionOpenRE = regexp.MustCompile(`(?i)^(?:on|el|le|am|em|il|op)\s`)

	// "-----Original Message-----" (Outlook) and its translations.
	originalRE = regexp.MustCompile(`(?i)^-{2,}\s*(?:original message|mensaje original|ursprüngliche nachricht|` +
		`original-nachricht|message d'origine|messaggio originale|oorspronkelijk bericht|mensagem original)\s*-{2,}$`)
	// Outlook's "________________________________" above the header block.
	separatorRE = regexp.MustCompile(`^_{10,}$`)
	// The "From: ... / Sent: ..." header block Outlook puts above history;
	// "*From:*" when it came from bold HTML.
	headerFromRE = regexp.MustCompile(`(?i)^\*?(?:from|de|von|da|van|från|fra|od)\s*:\*?\s*\S`)
	headerSentRE = regexp.MustCompile(`(?i)^\*?(?:sent|date|enviado|fecha|gesendet|datum|envoyé|inviato|data|` +
		`verzonden|skickat|sendt)\s*:`)
	// A forward is content the client chose to send: not history to cut.
	forwardRE = regexp.MustCompile(`(?i)(?:forwarded message|begin forwarded message|mensaje reenviado|` +
		`weitergeleitete nachricht|message transféré|message transmis)`)

	// Lines mail apps add under what the person wrote.
	signOffRE = regexp.MustCompile(`(?i)^(?:sent from my (?:iphone|ipad|android|mobile|samsung|galaxy|blackberry|huawei|pixel|windows phone|smartphone)` +
		`|sent from (?:yahoo mail|mail|outlook)\b` +
		`|get outlook for (?:ios|android)` +
		`|enviado desde mi (?:iphone|ipad|android|móvil|movil|samsung|galaxy|smartphone)` +
		`|enviado desde (?:yahoo mail|outlook|correo)\b` +
		`|envoyé de mon (?:iphone|ipad|android|mobile|smartphone)` +
		`|von meinem (?:iphone|ipad|android|smartphone|handy).{0,30}gesendet)\b.{0,30}$`)
)

// Signature limits: below "-- " only a block this small is taken for a
// signature. Anything longer is kept, in case the person went on writing.
const (
	maxSignatureLines = 10
	maxSignatureBytes = 1000
)

// TrimReply removes quoted history and signatures from the text of a reply,
// so that triage and the digest read what the person wrote now. It removes
// ">" lines with the attribution line above them ("On <date>, <name>
// wrote:", even wrapped over two lines, and its Spanish, French and German
// forms), everything from an Outlook history block ("-----Original
// Message-----", "________________________________" or a "From: ... Sent:
// ..." header block) or an attribution line not followed by ">" lines (HTML
// mail turned into text), a short signature below a "-- " line, and lines
// such as "Sent from my iPhone" or "Get Outlook for iOS".
//
// Text the person wrote below or between quoted lines is kept. cut reports
// whether anything was removed; when nothing was, or when trimming would
// leave nothing, TrimReply returns text unchanged.
func TrimReply(text string) (trimmed string, cut bool) {
	norm := strings.ReplaceAll(text, "\r\n", "\n")
	norm = strings.ReplaceAll(norm, "\r", "\n")
	lines := strings.Split(norm, "\n")
	removed := false
	drop := func(ls ...string) {
		for _, l := range ls {
			if strings.TrimSpace(l) != "" {
				removed = true
			}
		}
	}

	if i := historyStart(lines); i >= 0 {
		drop(lines[i:]...)
		lines = lines[:i]
	}

	kept := make([]string, 0, len(lines))
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if isQuoted(l) {
			drop(l)
			continue
		}
		if n := attribution(lines, i); n > 0 && quotedFollows(lines, i+n) {
			drop(lines[i : i+n]...)
			i += n - 1
			continue
		}
		if signOffRE.MatchString(strings.TrimSpace(l)) {
			drop(l)
			continue
		}
		kept = append(kept, l)
	}

	if i := signatureStart(kept); i >= 0 {
		drop(kept[i:]...)
		kept = kept[:i]
	}

	out := tidy(kept)
	if !removed || out == "" {
		return text, false
	}
	return out, true
}

// historyStart returns the index of the first line of history that is not
// quoted line by line, or -1.
func historyStart(lines []string) int {
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case t == "":
			continue
		case originalRE.MatchString(t):
			return i
		case separatorRE.MatchString(t) && headerBlockWithin(lines, i+1, 3):
			return i
		case headerBlock(lines, i) && !forwarded(lines, i):
			return i
		}
		if n := attribution(lines, i); n > 0 && !quotedFollows(lines, i+n) {
			return i
		}
	}
	return -1
}

// headerBlock reports whether lines[i] is a "From:" line followed, within
// four lines, by a "Sent:" or "Date:" line.
func headerBlock(lines []string, i int) bool {
	if !headerFromRE.MatchString(strings.TrimSpace(lines[i])) {
		return false
	}
	for j := i + 1; j < len(lines) && j <= i+4; j++ {
		if headerSentRE.MatchString(strings.TrimSpace(lines[j])) {
			return true
		}
	}
	return false
}

// headerBlockWithin reports whether a header block starts within n
// non-blank lines from lines[i].
func headerBlockWithin(lines []string, i, n int) bool {
	for j := i; j < len(lines) && n > 0; j++ {
		if strings.TrimSpace(lines[j]) == "" {
			continue
		}
		if headerBlock(lines, j) {
			return true
		}
		n--
	}
	return false
}

// forwarded reports whether one of the two non-blank lines above lines[i]
// announces a forwarded message.
func forwarded(lines []string, i int) bool {
	for j, n := i-1, 2; j >= 0 && n > 0; j-- {
		t := strings.TrimSpace(lines[j])
		if t == "" {
			continue
		}
		if forwardRE.MatchString(t) {
			return true
		}
		n--
	}
	return false
}

// attribution returns how many lines (1 or 2) starting at lines[i] form an
// attribution line such as "On <date>, <name> wrote:", or 0. A date or an
// address must be in it, so "On Monday my sister wrote:" stays.
func attribution(lines []string, i int) int {
	t := strings.TrimSpace(lines[i])
	if !attributionOpenRE.MatchString(t) || len(t) > 300 {
		return 0
	}
	if plausibleAttribution(t) {
		return 1
	}
	if i+1 < len(lines) {
		next := strings.TrimSpace(lines[i+1])
		if next != "" && !isQuoted(next) && len(next) <= 200 && plausibleAttribution(t+" "+next) {
			return 2
		}
	}
	return 0
}

func plausibleAttribution(s string) bool {
	return attributionRE.MatchString(s) && strings.ContainsAny(s, "0123456789@")
}

// quotedFollows reports whether the first non-blank line from lines[i] is
// quoted.
func quotedFollows(lines []string, i int) bool {
	for ; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "" {
			return isQuoted(lines[i])
		}
	}
	return false
}

func isQuoted(l string) bool {
	return strings.HasPrefix(strings.TrimLeft(l, " \t"), ">")
}

// signatureStart returns the index of the last "-- " line (RFC 3676 §4.3;
// "--" too, as some mailers strip the space) when what follows is small
// enough to be a signature, or -1.
func signatureStart(lines []string) int {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimRight(lines[i], " \t") != "--" {
			continue
		}
		n, size := 0, 0
		for _, l := range lines[i+1:] {
			if strings.TrimSpace(l) != "" {
				n++
				size += len(l)
			}
		}
		if n <= maxSignatureLines && size <= maxSignatureBytes {
			return i
		}
		return -1
	}
	return -1
}

// tidy joins lines, dropping trailing white space, runs of blank lines and
// blank lines at either end.
func tidy(lines []string) string {
	var b strings.Builder
	blank := false
	for _, l := range lines {
		l = strings.TrimRight(l, " \t")
		if l == "" {
			blank = b.Len() > 0
			continue
		}
		if blank {
			b.WriteString("\n")
			blank = false
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(l)
	}
	return b.String()
}
