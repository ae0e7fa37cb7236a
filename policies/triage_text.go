package policies

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file turns message text into the tokens the lexicon's patterns
// match: lower case, no accents or apostrophes, leetspeak read as letters,
// letter-spacing and stretched letters undone, known typos corrected, emoji
// as tokens of their own, and sentence and clause numbers so that a pattern
// never reaches across a sentence and a negation never across a clause.

type tokKind uint8

const (
	kindWord  tokKind = iota
	kindNum           // "30", "2.5"
	kindDose          // "800mg", or "800 mg" joined
	kindEmoji         // one emoji or pictographic symbol
)

// token is one word of the message. text is normalised; start and end are
// the byte span in the source, so evidence quotes the client's own words.
type token struct {
	text       string
	start, end int32
	sent       int32 // sentence number; patterns stay inside one
	clause     int32 // clause number; negation stays inside one
	part       int8  // 0 subject, 1 body: nothing reaches across
	kind       tokKind
	id         int32 // the lexicon's number for text; 0 when unknown
	qopen      bool  // a quote mark just before
	qclose     bool  // a quote mark just after
}

// rawTok is a token under construction: its normalised bytes are
// buf[a:b].
type rawTok struct {
	a, b       int32
	start, end int32
	sent       int32
	clause     int32
	part       int8
	kind       tokKind
	qopen      bool
	qclose     bool
}

// doseUnits turn a number into a dose: "800mg", "800 mg", "5 ml".
var doseUnits = map[string]bool{
	"mg": true, "mgs": true, "mcg": true, "ug": true, "g": true, "gr": true, "grams": true,
	"gram": true, "ml": true, "milligrams": true, "milligram": true, "miligramos": true,
}

// leetDigits maps the digits and symbols used for letters. They are read as
// letters only inside a word that starts with a letter, so "k1ll" reads
// "kill" while "988", "800mg" and "2nd" stay.
var leetDigits = [128]byte{'0': 'o', '1': 'i', '3': 'e', '4': 'a', '5': 's', '7': 't', '@': 'a', '$': 's', '!': 'i'}

// fold lower-cases r and strips its accent (á→a, ñ→n, ç→c). It returns 0
// for a rune that is not a letter it knows, and two letters for ß.
func fold(r rune) (rune, rune) {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A', 0
		}
		return r, 0
	}
	r = unicode.ToLower(r)
	switch r {
	case 'á', 'à', 'â', 'ä', 'ã', 'å', 'ā', 'ă', 'ą':
		return 'a', 0
	case 'é', 'è', 'ê', 'ë', 'ē', 'ė', 'ę', 'ě':
		return 'e', 0
	case 'í', 'ì', 'î', 'ï', 'ī', 'į', 'ı':
		return 'i', 0
	case 'ó', 'ò', 'ô', 'ö', 'õ', 'ø', 'ō', 'ő':
		return 'o', 0
	case 'ú', 'ù', 'û', 'ü', 'ū', 'ů', 'ű':
		return 'u', 0
	case 'ñ', 'ń', 'ň':
		return 'n', 0
	case 'ç', 'ć', 'č':
		return 'c', 0
	case 'ý', 'ÿ':
		return 'y', 0
	case 'ß':
		return 's', 's'
	case 'ś', 'š':
		return 's', 0
	case 'ž', 'ź', 'ż':
		return 'z', 0
	case 'ł':
		return 'l', 0
	case 'đ', 'ď':
		return 'd', 0
	case 'ř':
		return 'r', 0
	case 'ť':
		return 't', 0
	}
	return r, 0
}

func isApostrophe(r rune) bool {
	return r == '\'' || r == '’' || r == '‘' || r == 'ʼ' || r == '`' || r == '´'
}

// isEmoji reports whether r is a pictograph clients use as a word: 💊 🔪
// 🪦 ⚰ 🌉 and the rest of the symbol blocks.
func isEmoji(r rune) bool {
	switch {
	case r >= 0x1F000 && r <= 0x1FAFF:
		return r < 0x1F3FB || r > 0x1F3FF // skin tones modify, they are not words
	case r >= 0x2600 && r <= 0x27BF, r >= 0x2B00 && r <= 0x2BFF, r >= 0x2300 && r <= 0x23FF:
		return true
	}
	return unicode.Is(unicode.So, r)
}

// isJoiner reports runes that only shape an emoji: variation selectors, the
// zero-width joiner, skin tones.
func isJoiner(r rune) bool {
	switch r {
	case 0xFE0F, 0xFE0E, 0x200D, 0x200B, 0x200C, 0x2060, 0xFEFF, 0x00AD:
		// Also the invisible characters used to break a word up: "ki\u200bll".
		return true
	}
	return r >= 0x1F3FB && r <= 0x1F3FF
}

// plain maps look-alike letters to ASCII: fullwidth "ｋｉｌｌ" and the
// mathematical alphabets "𝓴𝓲𝓵𝓵" used to dodge word filters.
func plain(r rune) rune {
	switch {
	case r >= 0xFF01 && r <= 0xFF5E:
		return r - 0xFEE0
	case r >= 0x1D400 && r <= 0x1D6A3:
		off := (r - 0x1D400) % 52
		if off < 26 {
			return 'A' + off
		}
		return 'a' + off - 26
	case r >= 0x1D7CE && r <= 0x1D7FF:
		return '0' + (r-0x1D7CE)%10
	}
	return r
}

// tokenizer holds one message's working memory; scratch keeps it between
// calls.
type tokenizer struct {
	lx   *lexicon
	buf  []byte
	raw  []rawTok
	toks []token
	out  []token
	word struct {
		a, start, end     int32
		letters, digits   bool
		amb               []int32 // offsets (from a) of letters that could be i or l
		symbols, wildcard bool
		open              bool
	}
	sent, clause int32
	part         int8
	src          string // the part being read
	base         int32  // its offset in the evidence source
}

// tokenize appends the tokens of one part of a message (subject or body),
// whose bytes start at offset base in the evidence source. Each part starts
// a new sentence.
func (z *tokenizer) tokenize(s string, base int32) {
	z.sent++
	z.clause++
	z.src, z.base = s, base
	lineHasText := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		pos := base + int32(i)
		next := rune(0)
		if i+size < len(s) {
			next, _ = utf8.DecodeRuneInString(s[i+size:])
			next = plain(next)
		}
		if r >= 0xFF01 {
			r = plain(r)
		}
		i += size
		if r != ' ' && r != '\t' && r != '\r' && r != '\n' {
			lineHasText = true
		}
		switch {
		case r == 'I' && z.word.open && z.word.letters:
			// "kiII" may be "kill": a capital I inside a word is read
			// either way.
			z.ambiguous()
			z.letter(r, pos, size)
		case r == '|' && z.word.open && z.word.letters:
			z.ambiguous()
			z.symbol('1', pos, size)
		case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'):
			z.letter(r, pos, size)
		case r >= '0' && r <= '9':
			z.digit(r, pos, size)
		case isApostrophe(r):
			// "don't" reads "dont"; a quote mark outside a word is a clause
			// mark. "OD'd" reads "oded", not "odd".
			if z.word.open && (next == 'd' || next == 'D') && strings.EqualFold(string(z.buf[z.word.a:]), "od") &&
				(i+1 >= len(s) || !isWordRune(rune(s[i+1]))) {
				z.buf = append(z.buf, 'e')
				continue
			}
			if !z.word.open || !isWordRune(next) {
				z.flush()
				z.clause++
			}
		case r == '@' || r == '$' || r == '*' || r == '!' && z.word.open && z.word.letters && unicode.IsLetter(next):
			// In-word symbols: "k!ll", "$uicide", "h@te", "k*ll".
			z.symbol(r, pos, size)
		case (r == '.' || r == ',') && z.word.open && z.lastIsDigit() && next >= '0' && next <= '9':
			z.buf = append(z.buf, '.') // "2.5", "1,000"
		case r == '.' || r == '!' || r == '?' || r == '…' || r == '¿' || r == '¡':
			z.flush()
			// "k.i.l.l" and "e.g" keep going; a stop before a space ends the sentence.
			if !(r == '.' && isWordRune(next)) {
				z.sent++
				z.clause++
			}
		case r == '\n':
			z.flush()
			if !lineHasText {
				z.sent++ // a blank line ends a paragraph
			}
			z.clause++
			lineHasText = false
		case r == ',' || r == ';' || r == ':' || r == '(' || r == ')' || r == '"' || r == '“' || r == '”' ||
			r == '«' || r == '»' || r == '/' || r == '[' || r == ']' || r == '–' || r == '—':
			z.flush()
			z.clause++
		case isJoiner(r):
		case unicode.IsLetter(r):
			z.letter(r, pos, size)
		case unicode.IsDigit(r):
			z.flush()
		case isEmoji(r):
			z.flush()
			a := int32(len(z.buf))
			z.buf = utf8.AppendRune(z.buf, r)
			z.raw = append(z.raw, rawTok{a: a, b: int32(len(z.buf)), start: pos, end: pos + int32(size),
				sent: z.sent, clause: z.clause, part: z.part, kind: kindEmoji})
		default:
			z.flush()
		}
	}
	z.flush()
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

func (z *tokenizer) open(pos int32) {
	if !z.word.open {
		z.word.open = true
		z.word.a = int32(len(z.buf))
		z.word.start = pos
		z.word.letters, z.word.digits, z.word.symbols, z.word.wildcard = false, false, false, false
		z.word.amb = z.word.amb[:0]
	}
}

// ambiguous marks the next byte of the open word as i-or-l.
func (z *tokenizer) ambiguous() {
	z.word.amb = append(z.word.amb, int32(len(z.buf))-z.word.a)
}

func (z *tokenizer) letter(r rune, pos int32, size int) {
	z.open(pos)
	z.word.letters = true
	a, b := fold(r)
	z.buf = utf8.AppendRune(z.buf, a)
	if b != 0 {
		z.buf = utf8.AppendRune(z.buf, b)
	}
	z.extend(pos + int32(size))
}

func (z *tokenizer) digit(r rune, pos int32, size int) {
	z.open(pos)
	if r == '1' {
		z.ambiguous()
	}
	z.word.digits = true
	z.buf = append(z.buf, byte(r))
	z.extend(pos + int32(size))
}

func (z *tokenizer) symbol(r rune, pos int32, size int) {
	z.open(pos)
	if r == '*' {
		z.word.wildcard = true
	} else {
		z.word.symbols = true
	}
	z.buf = append(z.buf, byte(r))
	z.extend(pos + int32(size))
}

// extend moves the open word's end in the source.
func (z *tokenizer) extend(end int32) { z.word.end = end }

func (z *tokenizer) lastIsDigit() bool {
	n := len(z.buf)
	return n > int(z.word.a) && z.buf[n-1] >= '0' && z.buf[n-1] <= '9'
}

// flush ends the open word: a number, a dose, or a word with leetspeak read
// as letters.
func (z *tokenizer) flush() {
	if !z.word.open {
		return
	}
	z.word.open = false
	w := z.buf[z.word.a:]
	kind := kindWord
	switch {
	case !z.word.letters && !z.word.digits:
		z.buf = z.buf[:z.word.a] // "$", "***"
		return
	case !z.word.letters:
		kind = kindNum
		if z.word.symbols || z.word.wildcard {
			w = stripSymbols(w)
		}
	case w[0] >= '0' && w[0] <= '9' && !leetAfterDigits(w):
		// "800mg" is a dose; "2nd", "10pm" stay as written.
		i := 0
		for i < len(w) && (w[i] >= '0' && w[i] <= '9' || w[i] == '.') {
			i++
		}
		if doseUnits[string(w[i:])] {
			kind = kindDose
		}
	default:
		if z.word.digits || z.word.symbols {
			for i, c := range w {
				if c < 128 && leetDigits[c] != 0 {
					w[i] = leetDigits[c]
				}
			}
		}
		if z.word.wildcard && z.lx != nil {
			w = z.lx.unstar(w)
		}
		if len(z.word.amb) > 0 && z.lx != nil {
			z.lx.iOrL(w, z.word.amb)
		}
	}
	z.buf = z.buf[:int(z.word.a)+len(w)]
	if len(w) == 0 {
		return
	}
	a, b := z.word.start-z.base, z.word.end-z.base
	z.raw = append(z.raw, rawTok{a: z.word.a, b: int32(len(z.buf)), start: z.word.start, end: z.word.end,
		sent: z.sent, clause: z.clause, part: z.part, kind: kind,
		qopen: a > 0 && isQuote(lastRune(z.src[:a])), qclose: int(b) < len(z.src) && isQuote(firstRune(z.src[b:]))})
}

func isQuote(r rune) bool {
	return isApostrophe(r) || r == '"' || r == '“' || r == '”' || r == '«' || r == '»'
}

func lastRune(s string) rune  { r, _ := utf8.DecodeLastRuneInString(s); return r }
func firstRune(s string) rune { r, _ := utf8.DecodeRuneInString(s); return r }

// leetAfterDigits reports whether a word that starts with digits has
// more digits after a letter: "5u1c1d3" is leetspeak, "2nd" is not.
func leetAfterDigits(w []byte) bool {
	i := 0
	for i < len(w) && (w[i] >= '0' && w[i] <= '9' || w[i] == '.') {
		i++
	}
	for _, c := range w[i:] {
		if c >= '0' && c <= '9' || c == '@' || c == '$' || c == '!' {
			return true
		}
	}
	return false
}

func stripSymbols(w []byte) []byte {
	out := w[:0]
	for _, c := range w {
		if c != '@' && c != '$' && c != '*' && c != '!' {
			out = append(out, c)
		}
	}
	return out
}

// finish turns the raw tokens into tokens and applies the lexicon's
// rewrites: letter-spacing, stretched letters, typos, aliases, doses.
func (z *tokenizer) finish() []token {
	norm := string(z.buf)
	z.toks = z.toks[:0]
	for _, r := range z.raw {
		z.toks = append(z.toks, token{text: norm[r.a:r.b], start: r.start, end: r.end, sent: r.sent,
			clause: r.clause, part: r.part, kind: r.kind, qopen: r.qopen, qclose: r.qclose})
	}
	if z.lx == nil {
		return z.toks
	}
	z.toks, z.out = z.lx.unspace(z.toks, z.out[:0]), z.toks
	for i := range z.toks {
		if z.toks[i].kind == kindWord {
			z.toks[i].text = z.lx.spell(z.toks[i].text)
		}
	}
	z.toks, z.out = z.lx.rewrite(z.toks, z.out[:0]), z.toks
	z.toks = joinDoses(z.toks)
	for i := range z.toks {
		z.toks[i].id = z.lx.ids[z.toks[i].text]
	}
	return z.toks
}

// joinDoses reads "800 mg" as one dose token.
func joinDoses(toks []token) []token {
	out := toks[:0]
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.kind == kindNum && i+1 < len(toks) && toks[i+1].kind == kindWord && doseUnits[toks[i+1].text] && toks[i+1].sent == t.sent {
			t.kind = kindDose
			t.end = toks[i+1].end
			i++
		}
		out = append(out, t)
	}
	return out
}

// unquote drops the lines of an email body that quote earlier mail (">")
// and their "On ... wrote:" attributions: they repeat what was triaged
// already, including our own acknowledgement.
func unquote(body string) string {
	if !strings.Contains(body, ">") {
		return body
	}
	var b strings.Builder
	for line := range strings.Lines(body) {
		s := strings.TrimSpace(line)
		if strings.HasPrefix(s, ">") || (strings.HasPrefix(s, "On ") && strings.HasSuffix(s, "wrote:")) {
			b.WriteString("\n")
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// normalize returns the normalised words of s joined by spaces, without
// lexicon rewrites. Lexicon words and config phrases are read with it.
func normalize(s string) string {
	var z tokenizer
	z.tokenize(s, 0)
	toks := z.finish()
	parts := make([]string, len(toks))
	for i, t := range toks {
		parts[i] = t.text
	}
	return strings.Join(parts, " ")
}
