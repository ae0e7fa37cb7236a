// Package schedule is the therapist's check-in calendar: the times of the week when
// client messages are read. A digest goes out at each check-in, and acknowledgements
// to clients name the next one.
//
// Check-ins are cron specs evaluated on the local wall clock of the calendar's zone.
// robfig/cron skips a time that falls in a spring-forward gap and fires twice in a
// repeated fall-back hour (PROTOCOLS §8); this package instead fires a gap check-in at
// the first instant after the gap, and a repeated-hour check-in once, at its first occurrence.
package schedule

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// maxSearch is how far (400 days) Next and Prev look for a check-in.
const maxSearch = 400 * 24 * time.Hour

// Away is a period with no check-ins (a holiday): From inclusive, Until exclusive.
type Away struct{ From, Until time.Time }

// Calendar is a set of weekly check-in times in one time zone, minus away periods.
// It is safe for concurrent use.
type Calendar struct {
	loc   *time.Location
	specs []cron.Schedule // evaluated on wall-clock times expressed in UTC
	away  []Away
}

// New builds a calendar in loc from slots (each passed through ParseSlot) and away periods.
// Errors name the slot index (`checkin[1]: ...`); all bad slots and away periods are
// reported together. At least one slot is required.
func New(loc *time.Location, slots []string, away []Away) (*Calendar, error) {
	var errs []error
	if loc == nil {
		errs = append(errs, errors.New("checkin: no time zone"))
	}
	if len(slots) == 0 {
		errs = append(errs, errors.New(`checkin: no check-in times; add one like "Mon 09:00"`))
	}
	c := &Calendar{loc: loc}
	for i, s := range slots {
		spec, err := ParseSlot(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("checkin[%d]: %w", i, err))
			continue
		}
		sched, _ := cron.ParseStandard(spec) // ParseSlot checked it
		c.specs = append(c.specs, sched)
	}
	for i, a := range away {
		if !a.Until.After(a.From) {
			errs = append(errs, fmt.Errorf("away[%d]: until (%s) must be after from (%s)",
				i, a.Until.Format(time.RFC3339), a.From.Format(time.RFC3339)))
			continue
		}
		c.away = append(c.away, a)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Location returns the calendar's time zone; every time it returns is in this zone.
func (c *Calendar) Location() *time.Location { return c.loc }

// Next returns the first check-in strictly after t that is not inside an away period;
// zero time if none within 400 days.
func (c *Calendar) Next(t time.Time) time.Time {
	limit := t.Add(maxSearch)
	for {
		var n time.Time
		for _, s := range c.specs {
			if x := c.specNext(s, t, limit); !x.IsZero() && (n.IsZero() || x.Before(n)) {
				n = x
			}
		}
		if n.IsZero() {
			return time.Time{}
		}
		a, ok := c.awayAt(n)
		if !ok {
			return n
		}
		t = a.Until.Add(-time.Nanosecond) // the next check-in at or after Until
	}
}

// Prev returns the latest check-in at or before t that is not inside an away period
// (the start of the current "check-in window"); zero if none within the 400 days before t.
func (c *Calendar) Prev(t time.Time) time.Time {
	limit := t.Add(-maxSearch)
	for {
		var p time.Time
		for _, s := range c.specs {
			if x := c.specPrev(s, t, limit); x.After(p) {
				p = x
			}
		}
		if p.IsZero() {
			return time.Time{}
		}
		a, ok := c.awayAt(p)
		if !ok {
			return p
		}
		t = a.From.Add(-time.Nanosecond) // the latest check-in before From
	}
}

// Upcoming returns the next n check-ins after t (fewer if the calendar runs out within
// 400 days of the last one found).
func (c *Calendar) Upcoming(t time.Time, n int) []time.Time {
	var out []time.Time
	for len(out) < n {
		t = c.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

// Missed returns the latest check-in in (last, now], if any: a check-in missed while the
// process was down. Several missed check-ins coalesce into the latest one. With zero last
// it returns false (a fresh install fires nothing).
func (c *Calendar) Missed(last, now time.Time) (time.Time, bool) {
	if last.IsZero() {
		return time.Time{}, false
	}
	p := c.Prev(now)
	if p.IsZero() || !p.After(last) {
		return time.Time{}, false
	}
	return p, true
}

// awayAt reports the away period containing t, if any.
func (c *Calendar) awayAt(t time.Time) (Away, bool) {
	for _, a := range c.away {
		if !t.Before(a.From) && t.Before(a.Until) {
			return a, true
		}
	}
	return Away{}, false
}

// specNext returns the first firing of s strictly after t, or zero if none by limit.
// Candidates come in wall-clock order and resolve is monotonic, so the first resolved
// time after t is the answer. In a repeated hour, wall times just after wall(t) can
// resolve to before t (their first occurrence has passed); those are skipped.
func (c *Calendar) specNext(s cron.Schedule, t, limit time.Time) time.Time {
	for w := s.Next(c.wall(t)); !w.IsZero(); w = s.Next(w) {
		r := c.resolve(w)
		if r.After(limit) {
			break
		}
		if r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// specPrev returns the last firing of s at or before t, or zero if none since limit.
// cron has no Prev, so it scans forward from ever earlier wall-clock starts.
func (c *Calendar) specPrev(s cron.Schedule, t, limit time.Time) time.Time {
	wt := c.wall(t)
	for back := 24 * time.Hour; ; back *= 2 {
		var best time.Time
		for w := s.Next(wt.Add(-back)); !w.IsZero(); w = s.Next(w) {
			r := c.resolve(w)
			if r.After(t) {
				break
			}
			best = r
		}
		if !best.IsZero() {
			if best.Before(limit) {
				return time.Time{}
			}
			return best
		}
		if back > maxSearch+48*time.Hour {
			return time.Time{}
		}
	}
}

// wall returns t's wall clock in the calendar's zone, expressed in UTC, where no
// DST change can disturb cron's arithmetic.
func (c *Calendar) wall(t time.Time) time.Time {
	t = t.In(c.loc)
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// resolve turns a wall-clock time (in UTC fields) into an instant in the calendar's zone.
// A repeated wall time (fall back) gives its first occurrence; a wall time that does not
// exist (spring forward) gives the first instant after the gap. time.Date leaves both
// choices unspecified, so they are made here.
func (c *Calendar) resolve(w time.Time) time.Time {
	r := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, c.loc)
	start, end := r.ZoneBounds()
	// The wall time may also exist under the zone before or after r's zone.
	cands := []time.Time{r}
	if !start.IsZero() {
		cands = append(cands, c.withOffsetAt(w, start.Add(-time.Second)))
	}
	if !end.IsZero() {
		cands = append(cands, c.withOffsetAt(w, end))
	}
	var best time.Time
	for _, x := range cands {
		if c.wall(x).Equal(w) && (best.IsZero() || x.Before(best)) {
			best = x
		}
	}
	if !best.IsZero() {
		return best
	}
	// In a gap: r landed on one side of the transition; return the transition.
	if c.wall(r).After(w) {
		return start
	}
	return end
}

// withOffsetAt reads wall time w with the UTC offset in force at instant at.
func (c *Calendar) withOffsetAt(w, at time.Time) time.Time {
	_, off := at.In(c.loc).Zone()
	return w.Add(-time.Duration(off) * time.Second).In(c.loc)
}

// ParseSlot turns one configured check-in into a 5-field cron spec. It accepts a friendly
// form — "Mon 09:00", "Wednesday 10:30", "mon,wed 9:00", "weekdays 17:00", "weekends 10:00",
// "daily 08:15" — or a standard 5-field cron spec ("0 9 * * 1"). Errors say what is wrong
// and how to write it, e.g. `"Wed 25:00" is not a time; write it like "Wed 10:00"`.
func ParseSlot(s string) (string, error) {
	f := strings.Fields(s)
	switch {
	case strings.HasPrefix(strings.TrimSpace(s), "@"):
		// Rejected below: descriptors like "@every 1h" are not wall-clock times.
	case len(f) == 2:
		return parseFriendly(s, f[0], f[1])
	case len(f) == 5 && !strings.Contains(f[0], "="):
		sched, err := cron.ParseStandard(strings.Join(f, " "))
		if err != nil {
			return "", fmt.Errorf(`%q is not a cron spec (%w); write it like "0 9 * * 1" (minute hour day-of-month month day-of-week)`, s, err)
		}
		if sched.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
			return "", fmt.Errorf(`%q never happens; write it like "0 9 * * 1"`, s)
		}
		return strings.Join(f, " "), nil
	}
	return "", fmt.Errorf(`%q is not a check-in time; write a day and a time like "Mon 09:00", or a 5-field cron spec like "0 9 * * 1" (no @descriptors or time zone; the calendar's zone is used)`, s)
}

// dayNames maps day words to cron day-of-week numbers (Sunday = 0).
var dayNames = map[string][]int{
	"sun": {0}, "sunday": {0},
	"mon": {1}, "monday": {1},
	"tue": {2}, "tues": {2}, "tuesday": {2},
	"wed": {3}, "wednesday": {3},
	"thu": {4}, "thur": {4}, "thurs": {4}, "thursday": {4},
	"fri": {5}, "friday": {5},
	"sat": {6}, "saturday": {6},
	"weekdays": {1, 2, 3, 4, 5},
	"weekends": {0, 6},
	"daily":    {0, 1, 2, 3, 4, 5, 6},
}

// parseFriendly parses "<days> <H:MM>".
func parseFriendly(s, days, clock string) (string, error) {
	var dow []int
	for d := range strings.SplitSeq(days, ",") {
		n, ok := dayNames[strings.ToLower(d)]
		if !ok {
			return "", fmt.Errorf(`%q: %q is not a day; write Mon, Tue, Wed, Thu, Fri, Sat, Sun (or a list like "mon,wed"), weekdays, weekends or daily, like "Mon 10:00"`, s, d)
		}
		dow = append(dow, n...)
	}
	h, m, ok := parseClock(clock)
	if !ok {
		return "", fmt.Errorf("%q is not a time; write it like %q", s, days+" 10:00")
	}
	slices.Sort(dow)
	dow = slices.Compact(dow)
	field := "*"
	if len(dow) < 7 {
		parts := make([]string, len(dow))
		for i, d := range dow {
			parts[i] = strconv.Itoa(d)
		}
		field = strings.Join(parts, ",")
	}
	return fmt.Sprintf("%d %d * * %s", m, h, field), nil
}

// parseClock parses a 24-hour "H:MM" or "HH:MM".
func parseClock(s string) (h, m int, ok bool) {
	hs, ms, found := strings.Cut(s, ":")
	if !found || len(hs) < 1 || len(hs) > 2 || len(ms) != 2 || !digits(hs) || !digits(ms) {
		return 0, 0, false
	}
	h, _ = strconv.Atoi(hs)
	m, _ = strconv.Atoi(ms)
	return h, m, h <= 23 && m <= 59
}

// digits reports whether s is all ASCII digits.
func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
