package policies

import "strings"

// Keyword is an SMS keyword that carriers and Twilio act on by themselves
// (PROTOCOLS.md §3).
type Keyword int

// The SMS keywords.
const (
	KeywordNone  Keyword = iota // an ordinary message
	KeywordStop                 // opt out: never text this number again; do not acknowledge (Twilio already confirmed)
	KeywordStart                // opt back in
	KeywordHelp                 // asks what this number is; answer with the AckHelp wording
)

// String returns the keyword's name as Twilio spells its OptOutType
// ("STOP", "START", "HELP"), or "NONE".
func (k Keyword) String() string {
	switch k {
	case KeywordStop:
		return "STOP"
	case KeywordStart:
		return "START"
	case KeywordHelp:
		return "HELP"
	}
	return "NONE"
}

// smsKeywords are Twilio's default keywords for long codes and toll-free
// numbers (PROTOCOLS.md §3; REVOKE and OPTOUT joined the older six-word
// opt-out list).
var smsKeywords = map[string]Keyword{
	"STOP":        KeywordStop,
	"STOPALL":     KeywordStop,
	"UNSUBSCRIBE": KeywordStop,
	"CANCEL":      KeywordStop,
	"END":         KeywordStop,
	"QUIT":        KeywordStop,
	"REVOKE":      KeywordStop,
	"OPTOUT":      KeywordStop,
	"START":       KeywordStart,
	"YES":         KeywordStart,
	"UNSTOP":      KeywordStart,
	"HELP":        KeywordHelp,
	"INFO":        KeywordHelp,
}

// SMSKeyword reports whether the whole body is an opt-out, opt-in or help
// keyword: STOP STOPALL UNSUBSCRIBE CANCEL END QUIT REVOKE OPTOUT; START YES
// UNSTOP; HELP INFO. Matching is case-insensitive and ignores surrounding
// space and trailing "." or "!". Twilio matches the whole body only, so
// "stop texting me" is KeywordNone; the gateway should still show such a
// message to a person.
func SMSKeyword(body string) Keyword {
	s := strings.TrimSpace(body)
	s = strings.TrimRight(s, ".!")
	s = strings.TrimSpace(s)
	return smsKeywords[strings.ToUpper(s)]
}

// OptOutType maps Twilio's OptOutType webhook parameter ("STOP", "START",
// "HELP", any case), sent when Advanced Opt-Out is on, to a Keyword.
// Anything else, including "", is KeywordNone.
func OptOutType(s string) Keyword {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "STOP":
		return KeywordStop
	case "START":
		return KeywordStart
	case "HELP":
		return KeywordHelp
	}
	return KeywordNone
}
