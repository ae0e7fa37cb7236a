package schedule

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // zones load without system zoneinfo
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustNew(t *testing.T, zone string, slots []string, away []Away) *Calendar {
	t.Helper()
	c, err := New(mustLoc(t, zone), slots, away)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ts parses an RFC 3339 time; results are compared in this form, which shows the
// local wall clock and the offset, so a wrong zone or DST offset shows up.
func ts(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func format(v time.Time) string {
	if v.IsZero() {
		return "zero"
	}
	return v.Format(time.RFC3339)
}

func TestParseSlot(t *testing.T) {
	good := []struct{ in, want string }{
		{"Mon 09:00", "0 9 * * 1"},
		{"Wednesday 10:30", "30 10 * * 3"},
		{"mon,wed 9:00", "0 9 * * 1,3"},
		{"wed,mon,wed 9:00", "0 9 * * 1,3"},
		{"weekdays 17:00", "0 17 * * 1,2,3,4,5"},
		{"weekends 10:00", "0 10 * * 0,6"},
		{"daily 08:15", "15 8 * * *"},
		{"SUN 23:59", "59 23 * * 0"},
		{"  thu   0:00 ", "0 0 * * 4"},
		{"0 9 * * 1", "0 9 * * 1"},
		{" 30  17 * *  1-5 ", "30 17 * * 1-5"},
		{"0 9 1 * *", "0 9 1 * *"},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSlot(tc.in)
			if err != nil {
				t.Fatalf("ParseSlot(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseSlot(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}

	bad := []struct{ in, want string }{
		{"Wed 25:00", `"Wed 25:00" is not a time; write it like "Wed 10:00"`},
		{"Wed 10:60", `"Wed 10:60" is not a time; write it like "Wed 10:00"`},
		{"Wed 9", "is not a time"},
		{"Wed 9:5", "is not a time"},
		{"Wed +9:00", "is not a time"},
		{"Wed 9am", "is not a time"},
		{"Wdn 10:00", `"Wdn" is not a day`},
		{"mon,,wed 9:00", `"" is not a day`},
		{"Mon", "is not a check-in time"},
		{"", "is not a check-in time"},
		{"Mon 09:00 Berlin", "is not a check-in time"},
		{"0 9 * *", "is not a check-in time"},
		{"0 9 * * 1 2026", "is not a check-in time"},
		{"@daily", "is not a check-in time"},
		{"@every 1h", "is not a check-in time"},
		{"CRON_TZ=UTC 0 9 * *", "is not a check-in time"},
		{"0 25 * * 1", "is not a cron spec"},
		{"0 9 30 2 *", "never happens"},
	}
	for _, tc := range bad {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSlot(tc.in)
			if err == nil {
				t.Fatalf("ParseSlot(%q) = %q, want error", tc.in, got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseSlot(%q) error %q, want it to contain %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	_, err := New(berlin, []string{"Mon 09:00", "Wed 25:00", "Fry 10:00"}, nil)
	if err == nil {
		t.Fatal("New with bad slots: no error")
	}
	for _, want := range []string{
		`checkin[1]: "Wed 25:00" is not a time; write it like "Wed 10:00"`,
		`checkin[2]: "Fry 10:00": "Fry" is not a day`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "checkin[0]") {
		t.Errorf("error %q names the good slot", err)
	}

	if _, err := New(berlin, nil, nil); err == nil {
		t.Error("New with no slots: no error")
	}
	if _, err := New(nil, []string{"Mon 09:00"}, nil); err == nil {
		t.Error("New with nil location: no error")
	}
	now := time.Date(2026, 7, 1, 0, 0, 0, 0, berlin)
	if _, err := New(berlin, []string{"Mon 09:00"}, []Away{{From: now, Until: now}}); err == nil ||
		!strings.Contains(err.Error(), "away[0]") {
		t.Errorf("New with empty away period: error %v, want away[0]", err)
	}
}

func TestNext(t *testing.T) {
	tests := []struct {
		name  string
		zone  string
		slots []string
		from  string
		want  string
	}{
		{"saturday to monday", "Europe/Berlin", []string{"Mon 09:00", "Fri 17:00"}, "2026-06-06T12:00:00+02:00", "2026-06-08T09:00:00+02:00"},
		{"strictly after", "Europe/Berlin", []string{"Mon 09:00", "Fri 17:00"}, "2026-06-05T17:00:00+02:00", "2026-06-08T09:00:00+02:00"},
		{"sunday night to monday", "Europe/Berlin", []string{"Mon 09:00"}, "2026-06-07T23:59:59+02:00", "2026-06-08T09:00:00+02:00"},
		{"sub-second before", "Europe/Berlin", []string{"Mon 09:00"}, "2026-06-08T08:59:59.5+02:00", "2026-06-08T09:00:00+02:00"},
		{"year end", "Europe/Berlin", []string{"Mon 09:00", "Fri 17:00"}, "2026-12-31T10:00:00+01:00", "2027-01-01T17:00:00+01:00"},
		{"year end monday", "Europe/Berlin", []string{"Mon 09:00"}, "2026-12-31T10:00:00+01:00", "2027-01-04T09:00:00+01:00"},
		{"input in UTC", "Europe/Berlin", []string{"Mon 09:00"}, "2026-06-08T06:59:00Z", "2026-06-08T09:00:00+02:00"},
		{"cron spec", "America/New_York", []string{"30 17 * * 1-5"}, "2026-06-05T18:00:00-04:00", "2026-06-08T17:30:00-04:00"},

		{"new york spring monday", "America/New_York", []string{"Mon 09:00"}, "2026-03-02T10:00:00-05:00", "2026-03-09T09:00:00-04:00"},
		{"new york fall monday", "America/New_York", []string{"Mon 09:00"}, "2026-10-26T10:00:00-04:00", "2026-11-02T09:00:00-05:00"},
		{"berlin spring monday", "Europe/Berlin", []string{"Mon 09:00"}, "2026-03-23T10:00:00+01:00", "2026-03-30T09:00:00+02:00"},
		{"berlin fall monday", "Europe/Berlin", []string{"Mon 09:00"}, "2026-10-19T10:00:00+02:00", "2026-10-26T09:00:00+01:00"},

		{"berlin gap fires at 03:00", "Europe/Berlin", []string{"daily 02:30"}, "2026-03-29T00:00:00+01:00", "2026-03-29T03:00:00+02:00"},
		{"berlin after gap", "Europe/Berlin", []string{"daily 02:30"}, "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"},
		{"berlin gap and 03:00 fire once", "Europe/Berlin", []string{"daily 02:30", "daily 03:00"}, "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"},
		{"new york gap fires at 03:00", "America/New_York", []string{"Sun 02:30"}, "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00"},
		{"berlin fall first occurrence", "Europe/Berlin", []string{"daily 02:30"}, "2026-10-25T00:00:00+02:00", "2026-10-25T02:30:00+02:00"},
		{"berlin fall not twice", "Europe/Berlin", []string{"daily 02:30"}, "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"},
		{"berlin fall second pass", "Europe/Berlin", []string{"daily 02:30"}, "2026-10-25T02:10:00+01:00", "2026-10-26T02:30:00+01:00"},
		{"new york fall first occurrence", "America/New_York", []string{"daily 01:30"}, "2026-11-01T00:00:00-04:00", "2026-11-01T01:30:00-04:00"},
		{"new york fall not twice", "America/New_York", []string{"daily 01:30"}, "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.zone, tc.slots, nil)
			got := c.Next(ts(t, tc.from))
			if format(got) != tc.want {
				t.Fatalf("Next(%s) = %s, want %s", tc.from, format(got), tc.want)
			}
			if got.Location() != c.Location() {
				t.Fatalf("Next location %v, want %v", got.Location(), c.Location())
			}
		})
	}
}

func TestPrev(t *testing.T) {
	tests := []struct {
		name  string
		zone  string
		slots []string
		at    string
		want  string
	}{
		{"monday morning to friday", "Europe/Berlin", []string{"Mon 09:00", "Fri 17:00"}, "2026-06-08T08:59:00+02:00", "2026-06-05T17:00:00+02:00"},
		{"at a check-in", "Europe/Berlin", []string{"Mon 09:00", "Fri 17:00"}, "2026-06-08T09:00:00+02:00", "2026-06-08T09:00:00+02:00"},
		{"sunday to friday", "Europe/Berlin", []string{"Mon 09:00", "Fri 17:00"}, "2026-06-07T23:00:00+02:00", "2026-06-05T17:00:00+02:00"},
		{"year end", "Europe/Berlin", []string{"Mon 09:00"}, "2027-01-02T12:00:00+01:00", "2026-12-28T09:00:00+01:00"},
		{"monthly", "Europe/Berlin", []string{"0 9 1 * *"}, "2026-03-31T12:00:00+02:00", "2026-03-01T09:00:00+01:00"},
		{"new york after spring", "America/New_York", []string{"Mon 09:00"}, "2026-03-10T00:00:00-04:00", "2026-03-09T09:00:00-04:00"},
		{"berlin gap check-in", "Europe/Berlin", []string{"daily 02:30"}, "2026-03-29T03:00:00+02:00", "2026-03-29T03:00:00+02:00"},
		{"berlin before gap", "Europe/Berlin", []string{"daily 02:30"}, "2026-03-29T01:59:59+01:00", "2026-03-28T02:30:00+01:00"},
		{"berlin fall second pass", "Europe/Berlin", []string{"daily 02:30"}, "2026-10-25T02:45:00+01:00", "2026-10-25T02:30:00+02:00"},
		{"berlin fall between passes", "Europe/Berlin", []string{"daily 02:30"}, "2026-10-25T02:10:00+01:00", "2026-10-25T02:30:00+02:00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.zone, tc.slots, nil)
			if got := c.Prev(ts(t, tc.at)); format(got) != tc.want {
				t.Fatalf("Prev(%s) = %s, want %s", tc.at, format(got), tc.want)
			}
		})
	}
}

func TestUpcoming(t *testing.T) {
	tests := []struct {
		name  string
		zone  string
		slots []string
		from  string
		want  []string
	}{
		{"over the weekend", "Europe/Berlin", []string{"Mon 09:00", "Wed 10:30", "Fri 17:00"}, "2026-06-03T11:00:00+02:00",
			[]string{"2026-06-05T17:00:00+02:00", "2026-06-08T09:00:00+02:00", "2026-06-10T10:30:00+02:00"}},
		{"hourly over fall back", "Europe/Berlin", []string{"30 * * * *"}, "2026-10-25T01:00:00+02:00",
			[]string{"2026-10-25T01:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T03:30:00+01:00"}},
		{"quarter past over spring forward", "Europe/Berlin", []string{"15 * * * *"}, "2026-03-29T01:00:00+01:00",
			[]string{"2026-03-29T01:15:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"}},
		{"new york 09:00 over spring", "America/New_York", []string{"Mon 09:00"}, "2026-03-01T00:00:00-05:00",
			[]string{"2026-03-02T09:00:00-05:00", "2026-03-09T09:00:00-04:00", "2026-03-16T09:00:00-04:00"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.zone, tc.slots, nil)
			got := c.Upcoming(ts(t, tc.from), len(tc.want))
			if len(got) != len(tc.want) {
				t.Fatalf("Upcoming: %d times, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if format(got[i]) != tc.want[i] {
					t.Errorf("Upcoming[%d] = %s, want %s", i, format(got[i]), tc.want[i])
				}
			}
		})
	}
	c := mustNew(t, "UTC", []string{"daily 09:00"}, nil)
	if got := c.Upcoming(time.Now(), 0); len(got) != 0 {
		t.Errorf("Upcoming(0) = %v, want none", got)
	}
}

func TestAway(t *testing.T) {
	holiday := []Away{{From: ts(t, "2026-07-01T00:00:00+02:00"), Until: ts(t, "2026-07-15T00:00:00+02:00")}}
	tests := []struct {
		name string
		away []Away
		op   string // next or prev
		at   string
		want string
	}{
		{"next skips holiday", holiday, "next", "2026-06-30T10:00:00+02:00", "2026-07-15T09:00:00+02:00"},
		{"next inside holiday", holiday, "next", "2026-07-08T10:00:00+02:00", "2026-07-15T09:00:00+02:00"},
		{"next at until", []Away{{From: ts(t, "2026-07-01T00:00:00+02:00"), Until: ts(t, "2026-07-15T09:00:00+02:00")}},
			"next", "2026-06-30T10:00:00+02:00", "2026-07-15T09:00:00+02:00"},
		{"from is inclusive", []Away{{From: ts(t, "2026-07-01T09:00:00+02:00"), Until: ts(t, "2026-07-01T09:00:01+02:00")}},
			"next", "2026-06-30T10:00:00+02:00", "2026-07-02T09:00:00+02:00"},
		{"overlapping periods", append([]Away{{From: ts(t, "2026-07-10T00:00:00+02:00"), Until: ts(t, "2026-07-20T00:00:00+02:00")}}, holiday...),
			"next", "2026-06-30T10:00:00+02:00", "2026-07-20T09:00:00+02:00"},
		{"prev skips holiday", holiday, "prev", "2026-07-10T12:00:00+02:00", "2026-06-30T09:00:00+02:00"},
		{"prev after holiday", holiday, "prev", "2026-07-15T09:00:00+02:00", "2026-07-15T09:00:00+02:00"},
		{"window starts before holiday", holiday, "prev", "2026-07-15T08:59:00+02:00", "2026-06-30T09:00:00+02:00"},
		{"next none within 400 days", []Away{{From: ts(t, "2026-07-01T00:00:00+02:00"), Until: ts(t, "2028-01-01T00:00:00+01:00")}},
			"next", "2026-06-30T10:00:00+02:00", "zero"},
		{"prev none within 400 days", []Away{{From: ts(t, "2025-01-01T00:00:00+01:00"), Until: ts(t, "2026-07-01T00:00:00+02:00")}},
			"prev", "2026-06-30T10:00:00+02:00", "zero"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, "Europe/Berlin", []string{"weekdays 09:00"}, tc.away)
			var got time.Time
			if tc.op == "next" {
				got = c.Next(ts(t, tc.at))
			} else {
				got = c.Prev(ts(t, tc.at))
			}
			if format(got) != tc.want {
				t.Fatalf("%s(%s) = %s, want %s", tc.op, tc.at, format(got), tc.want)
			}
		})
	}
}

func TestMissed(t *testing.T) {
	holiday := []Away{{From: ts(t, "2026-07-01T00:00:00+02:00"), Until: ts(t, "2026-07-15T00:00:00+02:00")}}
	tests := []struct {
		name      string
		away      []Away
		last, now string
		want      string // "none" if nothing was missed
	}{
		{"nothing missed", nil, "2026-06-05T09:00:00+02:00", "2026-06-05T12:00:00+02:00", "none"},
		{"one missed", nil, "2026-06-05T09:00:00+02:00", "2026-06-08T10:00:00+02:00", "2026-06-08T09:00:00+02:00"},
		{"several missed: the latest once", nil, "2026-06-05T09:00:00+02:00", "2026-06-11T12:00:00+02:00", "2026-06-11T09:00:00+02:00"},
		{"now is inclusive", nil, "2026-06-05T09:00:00+02:00", "2026-06-08T09:00:00+02:00", "2026-06-08T09:00:00+02:00"},
		{"last is exclusive", nil, "2026-06-08T09:00:00+02:00", "2026-06-08T10:00:00+02:00", "none"},
		{"down over a holiday", holiday, "2026-06-30T09:00:00+02:00", "2026-07-10T12:00:00+02:00", "none"},
		{"zero last", nil, "", "2026-06-11T12:00:00+02:00", "none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, "Europe/Berlin", []string{"weekdays 09:00"}, tc.away)
			var last time.Time
			if tc.last != "" {
				last = ts(t, tc.last)
			}
			at, ok := c.Missed(last, ts(t, tc.now))
			got := "none"
			if ok {
				got = format(at)
			}
			if got != tc.want {
				t.Fatalf("Missed(%s, %s) = %s, want %s", tc.last, tc.now, got, tc.want)
			}
		})
	}
}

// fakeClock moves time forward by d on each after(d) and fires at once, so Run
// goes through days of schedule in microseconds. It cancels the run at end.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	end    time.Time
	cancel context.CancelFunc
	waits  []time.Duration
	jump   time.Duration // added once, on the first wait: a suspended machine
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) after(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, d)
	f.now = f.now.Add(d + f.jump)
	f.jump = 0
	if f.now.After(f.end) {
		f.cancel() // a safety net: the test went on too long
	}
	ch := make(chan time.Time, 1)
	ch <- f.now
	return ch
}

// firing records one Fire call: the scheduled time and the clock when it ran.
type firing struct{ at, now time.Time }

// runFake runs r on a fake clock starting at start until stop fires have happened
// or the clock passes start plus a week.
func runFake(t *testing.T, r *Runner, start string, jump time.Duration, stop int, fire func(n int, at time.Time) error) ([]firing, *fakeClock) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := &fakeClock{now: ts(t, start), cancel: cancel, jump: jump}
	clk.end = clk.now.Add(7 * 24 * time.Hour)
	var fired []firing
	r.Now = clk.Now
	r.after = clk.after
	r.Fire = func(_ context.Context, at time.Time) error {
		fired = append(fired, firing{at, clk.Now()})
		err := fire(len(fired), at)
		if len(fired) == stop {
			cancel()
		}
		return err
	}
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return fired, clk
}

func lastIs(v string) func(context.Context) (time.Time, error) {
	return func(context.Context) (time.Time, error) {
		if v == "" {
			return time.Time{}, nil
		}
		return time.Parse(time.RFC3339, v)
	}
}

func TestRunner(t *testing.T) {
	ok := func(int, time.Time) error { return nil }
	tests := []struct {
		name  string
		last  string
		stop  int
		fire  func(n int, at time.Time) error
		want  []string // scheduled times of each Fire call
		waits []time.Duration
	}{
		{"fires missed once, then next due", "2026-06-01T09:00:00+02:00", 2, ok,
			[]string{"2026-06-03T09:00:00+02:00", "2026-06-05T17:00:00+02:00"}, nil},
		{"fresh install fires the next due only", "", 1, ok,
			[]string{"2026-06-05T17:00:00+02:00"}, nil},
		{"retries a failing fire", "", 3,
			func(n int, _ time.Time) error {
				if n < 3 {
					return errors.New("smtp: 451 try later")
				}
				return nil
			},
			[]string{"2026-06-05T17:00:00+02:00", "2026-06-05T17:00:00+02:00", "2026-06-05T17:00:00+02:00"},
			[]time.Duration{30 * time.Second, time.Minute}},
		{"recovers a panic", "", 2,
			func(n int, _ time.Time) error {
				if n == 1 {
					panic("client text")
				}
				return nil
			},
			[]string{"2026-06-05T17:00:00+02:00", "2026-06-05T17:00:00+02:00"},
			[]time.Duration{30 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, "Europe/Berlin", []string{"Mon 09:00", "Wed 09:00", "Fri 17:00"}, nil)
			var logs bytes.Buffer
			r := &Runner{Calendar: c, Last: lastIs(tc.last), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			// Thursday noon: Wednesday 09:00 has passed, Friday 17:00 is next.
			fired, clk := runFake(t, r, "2026-06-04T12:00:00+02:00", 0, tc.stop, tc.fire)
			if strings.Contains(logs.String(), "client text") {
				t.Errorf("log holds the panic value:\n%s", logs.String())
			}
			if len(fired) != len(tc.want) {
				t.Fatalf("fired %d times, want %d", len(fired), len(tc.want))
			}
			for i, f := range fired {
				if format(f.at) != tc.want[i] {
					t.Errorf("fire %d at %s, want %s", i, format(f.at), tc.want[i])
				}
				if f.now.Before(f.at) {
					t.Errorf("fire %d for %s ran early, at %s", i, format(f.at), format(f.now))
				}
			}
			// The last fire's retry waits come after the minute steps towards it.
			if n := len(tc.waits); n > 0 {
				got := clk.waits[len(clk.waits)-n:]
				for i := range got {
					if got[i] != tc.waits[i] {
						t.Errorf("wait %d = %v, want %v", i, got[i], tc.waits[i])
					}
				}
			}
			for _, d := range clk.waits {
				if d > time.Minute {
					t.Errorf("waited %v in one step, want at most a minute", d)
				}
			}
		})
	}
}

func TestRunnerGivesUpAtNextCheckIn(t *testing.T) {
	c := mustNew(t, "UTC", []string{"daily 09:00", "daily 09:02"}, nil)
	r := &Runner{Calendar: c, Last: lastIs("")}
	fail := func(n int, at time.Time) error {
		if at.Minute() == 0 {
			return errors.New("down")
		}
		return nil
	}
	fired, _ := runFake(t, r, "2026-06-04T08:59:00Z", 0, 4, fail)
	// 09:00 at +0, +30s, +90s; the next retry (+3m30s) is past 09:02, so give up and fire 09:02.
	want := []string{"09:00:00", "09:00:30", "09:01:30", "09:02:00"}
	if len(fired) != len(want) {
		t.Fatalf("fired %d times, want %d", len(fired), len(want))
	}
	for i, f := range fired {
		if got := f.now.Format(time.TimeOnly); got != want[i] {
			t.Errorf("fire %d ran at %s, want %s", i, got, want[i])
		}
	}
}

func TestRunnerSuspendFiresLatestOnce(t *testing.T) {
	c := mustNew(t, "UTC", []string{"daily 09:00"}, nil)
	r := &Runner{Calendar: c, Last: lastIs("2026-06-04T09:00:00Z")}
	// Asleep from Thursday 12:00 to Sunday 12:00: Fri, Sat and Sun 09:00 pass during one wait.
	fired, _ := runFake(t, r, "2026-06-04T12:00:00Z", 72*time.Hour, 2, func(int, time.Time) error { return nil })
	want := []string{"2026-06-07T09:00:00Z", "2026-06-08T09:00:00Z"}
	if len(fired) != len(want) {
		t.Fatalf("fired %d times, want %d", len(fired), len(want))
	}
	for i, f := range fired {
		if format(f.at) != want[i] {
			t.Errorf("fire %d at %s, want %s", i, format(f.at), want[i])
		}
	}
}

func TestRunnerStopsOnCancel(t *testing.T) {
	c := mustNew(t, "UTC", []string{"daily 09:00"}, nil)
	var mu sync.Mutex
	fires := 0
	r := &Runner{
		Calendar: c,
		Last:     lastIs(""),
		Fire: func(context.Context, time.Time) error {
			mu.Lock()
			defer mu.Unlock()
			fires++
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if fires != 0 {
		t.Fatalf("fired %d times, want 0", fires)
	}
}

func TestRunnerLastError(t *testing.T) {
	c := mustNew(t, "UTC", []string{"daily 09:00"}, nil)
	r := &Runner{
		Calendar: c,
		Last:     func(context.Context) (time.Time, error) { return time.Time{}, errors.New("db locked") },
		Fire:     func(context.Context, time.Time) error { return nil },
	}
	if err := r.Run(context.Background()); err == nil {
		t.Fatal("Run with failing Last = nil, want error")
	}
}
