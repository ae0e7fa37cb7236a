package policies

import "unicode/utf8"

// The two SMS encodings Segments reports.
const (
	EncodingGSM7 = "GSM-7"
	EncodingUCS2 = "UCS-2"
)

// Segment sizes (PROTOCOLS §2.5): a single SMS carries 140 octets, 160
// GSM-7 septets or 70 UCS-2 code units; each part of a concatenated SMS
// loses 6 octets to the user data header.
const (
	gsmSingle  = 160 // septets in a single GSM-7 SMS
	gsmPart    = 153 // septets per part of a concatenated GSM-7 SMS
	ucs2Single = 70  // UTF-16 code units in a single UCS-2 SMS
	ucs2Part   = 67  // UTF-16 code units per part of a concatenated UCS-2 SMS
)

// gsmBasicSet is the GSM 03.38 default alphabet in code order (0x00-0x7F),
// without 0x1B, the escape to the extension table. Each costs one septet.
const gsmBasicSet = "@£$¥èéùìòÇ\nØø\rÅå" +
	"Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ" +
	" !\"#¤%&'()*+,-./" +
	"0123456789:;<=>?" +
	"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§" +
	"¿abcdefghijklmnopqrstuvwxyzäöñüà"

// gsmExtensionSet is the GSM 03.38 extension table: escape plus one
// septet, so each costs two. Form feed (0x0A in the table) is among them.
const gsmExtensionSet = "\f^{}\\[]~|€"

// gsmCost maps each GSM-7 character to its septet count.
var gsmCost = func() map[rune]int {
	m := make(map[rune]int, 140)
	for _, r := range gsmBasicSet {
		m[r] = 1
	}
	for _, r := range gsmExtensionSet {
		m[r] = 2
	}
	return m
}()

// Segments returns how many SMS segments text needs and its encoding
// ("GSM-7" or "UCS-2"): GSM-7 basic set and extension table (^{}\[]~|€
// count 2), 160/153 per segment; any other char switches the whole text to
// UCS-2, 70/67 (count UTF-16 code units: an emoji is 2). Empty text is 1
// segment.
//
// A multi-part message is packed the way handsets and carriers split it:
// an escape sequence or a surrogate pair is never cut across two parts, so
// a part can hold one unit less than 153 or 67. This only matters when
// such a character straddles a boundary, and then counts one segment more
// than plain division would.
func Segments(text string) (n int, encoding string) {
	costs := make([]int, 0, len(text))
	gsm := true
	for _, r := range text {
		c, ok := gsmCost[r]
		if !ok {
			gsm = false
			break
		}
		costs = append(costs, c)
	}
	single, part, encoding := gsmSingle, gsmPart, EncodingGSM7
	if !gsm {
		single, part, encoding = ucs2Single, ucs2Part, EncodingUCS2
		costs = costs[:0]
		for _, r := range text {
			// Invalid UTF-8 arrives here as U+FFFD, one unit.
			costs = append(costs, utf16Len(r))
		}
	}

	total := 0
	for _, c := range costs {
		total += c
	}
	if total <= single {
		return 1, encoding
	}
	n, used := 1, 0
	for _, c := range costs {
		if used+c > part {
			n++
			used = 0
		}
		used += c
	}
	return n, encoding
}

// utf16Len is the number of UTF-16 code units r takes: 2 for a rune
// outside the Basic Multilingual Plane (most emoji), else 1.
func utf16Len(r rune) int {
	if r > 0xFFFF && r <= utf8.MaxRune {
		return 2
	}
	return 1
}
