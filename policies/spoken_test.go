package policies

import (
	"testing"
	"time"
)

func TestSpokenTime(t *testing.T) {
	// A fixed zone five hours behind UTC: the client's wall clock, not UTC,
	// must be spoken.
	est := time.FixedZone("EST", -5*3600)
	now := time.Date(2026, time.January, 12, 8, 0, 0, 0, est) // a Monday
	at := func(day, hour, minute int) time.Time {
		return time.Date(2026, time.January, day, hour, minute, 0, 0, est)
	}
	tests := []struct {
		name string
		t    time.Time
		now  time.Time
		want string
	}{
		{"morning on the hour", at(14, 10, 0), now, "Wednesday at 10 a.m."},
		{"half past", at(19, 9, 30), at(15, 0, 0), "Monday at 9:30 a.m."},
		{"noon", at(16, 12, 0), now, "Friday at noon"},
		{"after noon", at(13, 12, 15), now, "Tuesday at 12:15 p.m."},
		{"midnight", at(18, 0, 0), now, "Sunday at midnight"},
		{"just after midnight", at(18, 0, 5), now, "Sunday at 12:05 a.m."},
		{"evening", at(15, 18, 45), now, "Thursday at 6:45 p.m."},
		{"later today", at(12, 17, 0), now, "Monday at 5 p.m."},
		{"seconds dropped", at(14, 10, 0).Add(59 * time.Second), now, "Wednesday at 10 a.m."},
		{"just under a week", at(19, 7, 59), now, "Monday at 7:59 a.m."},
		{"exactly a week", at(19, 8, 0), now, "Monday, January 19 at 8 a.m."},
		{"across the new year", time.Date(2027, time.January, 4, 9, 0, 0, 0, est), time.Date(2026, time.December, 20, 9, 0, 0, 0, est), "Monday, January 4 at 9 a.m."},
		{"far away", time.Date(2027, time.January, 4, 9, 0, 0, 0, est), now, "Monday, January 4, 2027 at 9 a.m."},
		{"t's own zone", time.Date(2026, time.January, 14, 3, 0, 0, 0, time.UTC).In(est), now, "Tuesday at 10 p.m."},
		{"now in another zone", at(14, 10, 0), now.UTC(), "Wednesday at 10 a.m."},
		{"zero", time.Time{}, now, "at the next check-in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SpokenTime(tt.t, tt.now); got != tt.want {
				t.Fatalf("SpokenTime(%v, %v) = %q, want %q", tt.t, tt.now, got, tt.want)
			}
		})
	}
}
