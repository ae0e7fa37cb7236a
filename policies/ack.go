package policies

import "time"

// The values of AckPolicy.Repeat.
const (
	RepeatNone  = "none"  // stay silent after the first acknowledgement in a window
	RepeatBrief = "brief" // send a short "got this one too" after a quiet interval
)

// AckPolicy decides how to acknowledge a routine message given the client's
// history, shared across SMS and email. CARE.md: one full acknowledgement per
// check-in window, then silence or at most a brief note after a quiet
// interval, so a client who writes five times in an hour is not answered
// five times.
type AckPolicy struct {
	Repeat     string        // RepeatNone (silence for repeats) or RepeatBrief (a short note); anything else is silence
	BriefAfter time.Duration // least time between a brief note and the client's previous acknowledgement
}

// AckHistory is what the store knows about a client's acknowledgements;
// zero times mean never.
type AckHistory struct {
	LastFull time.Time // last full (AckFirst) acknowledgement
	LastAny  time.Time // last acknowledgement of any kind
}

// Decide returns AckFirst when the client had no full acknowledgement since
// windowStart (the last check-in; a full acknowledgement at exactly
// windowStart counts as inside the window). A zero windowStart means no
// check-in has happened yet, so there is one full acknowledgement ever until
// one does. Otherwise Decide returns AckRepeat when Repeat is "brief" and the
// latest acknowledgement is at least BriefAfter before now, and "" (stay
// quiet) in every other case.
//
// Decide is for routine messages only: urgent messages always get AckUrgent,
// and HELP gets AckHelp.
func (p AckPolicy) Decide(h AckHistory, windowStart, now time.Time) AckKind {
	if h.LastFull.IsZero() || (!windowStart.IsZero() && h.LastFull.Before(windowStart)) {
		return AckFirst
	}
	if p.Repeat != RepeatBrief {
		return ""
	}
	last := h.LastAny
	if h.LastFull.After(last) {
		last = h.LastFull
	}
	if now.Sub(last) >= p.BriefAfter {
		return AckRepeat
	}
	return ""
}
