package execdriver

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// timespanUnits are systemd.time(7)'s units, longest names first so that
// "ms" is not read as "m" followed by junk.
var timespanUnits = []struct {
	name string
	d    time.Duration
}{
	{"microseconds", time.Microsecond}, {"microsecond", time.Microsecond},
	{"milliseconds", time.Millisecond}, {"millisecond", time.Millisecond},
	{"seconds", time.Second}, {"second", time.Second},
	{"minutes", time.Minute}, {"minute", time.Minute},
	{"months", 30*24*time.Hour + 10*time.Hour + 30*time.Minute}, {"month", 30*24*time.Hour + 10*time.Hour + 30*time.Minute},
	{"hours", time.Hour}, {"hour", time.Hour},
	{"weeks", 7 * 24 * time.Hour}, {"week", 7 * 24 * time.Hour},
	{"years", 365*24*time.Hour + 6*time.Hour}, {"year", 365*24*time.Hour + 6*time.Hour},
	{"days", 24 * time.Hour}, {"day", 24 * time.Hour},
	{"usec", time.Microsecond}, {"msec", time.Millisecond},
	{"sec", time.Second}, {"min", time.Minute}, {"hr", time.Hour},
	{"us", time.Microsecond}, {"µs", time.Microsecond}, {"ms", time.Millisecond},
	{"s", time.Second}, {"m", time.Minute}, {"h", time.Hour},
	{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour},
	{"M", 30*24*time.Hour + 10*time.Hour + 30*time.Minute}, {"y", 365*24*time.Hour + 6*time.Hour},
}

// parseTimespan reads a systemd time span: "90", "5s", "1min 30s",
// "100ms", "2.5s". A number without a unit is in seconds. "infinity"
// returns 0, as does "0": for the timeouts that use it both mean "none".
func parseTimespan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "infinity" {
		return 0, nil
	}
	if s == "" {
		return 0, fmt.Errorf("empty time span")
	}
	var total time.Duration
	rest := s
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t")
		n := 0
		for n < len(rest) && (rest[n] >= '0' && rest[n] <= '9' || rest[n] == '.') {
			n++
		}
		if n == 0 {
			return 0, fmt.Errorf("bad time span %q", s)
		}
		num, err := strconv.ParseFloat(rest[:n], 64)
		if err != nil {
			return 0, fmt.Errorf("bad time span %q", s)
		}
		rest = strings.TrimLeft(rest[n:], " \t")
		unit := time.Second
		for _, u := range timespanUnits {
			if strings.HasPrefix(rest, u.name) {
				after := rest[len(u.name):]
				if after == "" || after[0] == ' ' || after[0] == '\t' || after[0] >= '0' && after[0] <= '9' {
					unit, rest = u.d, after
					break
				}
			}
		}
		if rest != "" && !(rest[0] == ' ' || rest[0] == '\t' || rest[0] >= '0' && rest[0] <= '9') {
			return 0, fmt.Errorf("bad time span %q: unknown unit", s)
		}
		total += time.Duration(num * float64(unit))
	}
	return total, nil
}
