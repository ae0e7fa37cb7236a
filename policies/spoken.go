package policies

import (
	"strconv"
	"time"
)

const (
	// spokenDateAfter is how far ahead a check-in must be before SpokenTime
	// adds the date: a bare weekday a week or more away is ambiguous.
	spokenDateAfter = 7 * 24 * time.Hour
	// spokenYearAfter is how far ahead a check-in must be before SpokenTime
	// also adds the year (only long away periods get there).
	spokenYearAfter = 300 * 24 * time.Hour
	// spokenUnknown is said when there is no check-in to name. It reads
	// well after "I'll read it", as the weekday forms do.
	spokenUnknown = "at the next check-in"
)

// SpokenTime names a check-in the way a person would say it, in t's own
// location: "Wednesday at 10 a.m.", "Monday at 9:30 a.m.", "Friday at noon",
// "Tuesday at 12:15 p.m.", "Sunday at midnight" (00:00 at the start of that
// Sunday). When t is 7 days or more after now it adds the date:
// "Monday, January 4 at 9 a.m."; 300 days or more, the year too:
// "Monday, January 4, 2027 at 9 a.m.". A zero t gives "at the next
// check-in". Seconds are dropped.
//
// Every form reads well after "I'll read it", so templates write
// "I'll read it {{.NextCheckin}}", not "on {{.NextCheckin}}".
func SpokenTime(t, now time.Time) string {
	if t.IsZero() {
		return spokenUnknown
	}
	s := t.Weekday().String()
	if d := t.Sub(now); d >= spokenDateAfter {
		s += ", " + t.Month().String() + " " + strconv.Itoa(t.Day())
		if d >= spokenYearAfter {
			s += ", " + strconv.Itoa(t.Year())
		}
	}
	return s + " at " + spokenClock(t.Hour(), t.Minute())
}

// spokenClock says a time of day on a 12-hour clock, AP style:
// "10 a.m.", "9:30 a.m.", "noon", "12:15 p.m.", "midnight", "12:15 a.m.".
func spokenClock(hour, minute int) string {
	if minute == 0 {
		switch hour {
		case 0:
			return "midnight"
		case 12:
			return "noon"
		}
	}
	suffix := "a.m."
	if hour >= 12 {
		suffix = "p.m."
	}
	h := hour % 12
	if h == 0 {
		h = 12
	}
	s := strconv.Itoa(h)
	if minute != 0 {
		s += ":" + strconv.Itoa(minute/10) + strconv.Itoa(minute%10)
	}
	return s + " " + suffix
}
