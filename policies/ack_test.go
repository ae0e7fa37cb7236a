package policies

import (
	"testing"
	"time"
)

func TestAckPolicyDecide(t *testing.T) {
	base := time.Date(2026, time.January, 12, 12, 0, 0, 0, time.UTC)
	checkin := base.Add(-2 * time.Hour) // the last check-in
	ago := func(d time.Duration) time.Time { return base.Add(-d) }
	brief := AckPolicy{Repeat: RepeatBrief, BriefAfter: time.Hour}
	none := AckPolicy{Repeat: RepeatNone, BriefAfter: time.Hour}

	tests := []struct {
		name        string
		p           AckPolicy
		h           AckHistory
		windowStart time.Time
		want        AckKind
	}{
		{"never acknowledged", brief, AckHistory{}, checkin, AckFirst},
		{"never acknowledged, no check-in yet", none, AckHistory{}, time.Time{}, AckFirst},
		{"full ack before this window", none, AckHistory{LastFull: ago(3 * time.Hour), LastAny: ago(3 * time.Hour)}, checkin, AckFirst},
		{"full ack at the check-in itself", none, AckHistory{LastFull: checkin, LastAny: checkin}, checkin, ""},
		{"full ack this window, repeats silent", none, AckHistory{LastFull: ago(time.Hour), LastAny: ago(time.Hour)}, checkin, ""},
		{"full ack this window, long ago enough for brief", brief, AckHistory{LastFull: ago(time.Hour), LastAny: ago(time.Hour)}, checkin, AckRepeat},
		{"brief too soon after the full ack", brief, AckHistory{LastFull: ago(59 * time.Minute), LastAny: ago(59 * time.Minute)}, checkin, ""},
		{"brief too soon after an earlier brief", brief, AckHistory{LastFull: ago(90 * time.Minute), LastAny: ago(10 * time.Minute)}, checkin, ""},
		{"brief after a quiet interval", brief, AckHistory{LastFull: ago(100 * time.Minute), LastAny: ago(70 * time.Minute)}, checkin, AckRepeat},
		{"no check-in yet: one full ack ever", none, AckHistory{LastFull: ago(48 * time.Hour), LastAny: ago(48 * time.Hour)}, time.Time{}, ""},
		{"no check-in yet: brief after interval", brief, AckHistory{LastFull: ago(48 * time.Hour), LastAny: ago(48 * time.Hour)}, time.Time{}, AckRepeat},
		{"LastAny missing falls back to LastFull", brief, AckHistory{LastFull: ago(10 * time.Minute)}, checkin, ""},
		{"unknown Repeat value is silence", AckPolicy{Repeat: "Brief", BriefAfter: time.Hour}, AckHistory{LastFull: ago(time.Hour), LastAny: ago(time.Hour)}, checkin, ""},
		{"zero BriefAfter: brief every time", AckPolicy{Repeat: RepeatBrief}, AckHistory{LastFull: ago(time.Minute), LastAny: base}, checkin, AckRepeat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Decide(tt.h, tt.windowStart, base); got != tt.want {
				t.Fatalf("Decide(%+v, %v) = %q, want %q", tt.h, tt.windowStart, got, tt.want)
			}
		})
	}
}
