package pxe

import (
	"fmt"
	"strings"
)

// NormalizeMAC returns mac as six lower-case, colon-separated hex bytes
// ("aa:bb:cc:dd:ee:ff"). It accepts colons, hyphens (iPXE's ${mac:hexhyp})
// or dots as separators, or none ("AABBCCDDEEFF"), in either case.
func NormalizeMAC(mac string) (string, error) {
	v, err := macValue(mac)
	if err != nil {
		return "", err
	}
	return formatMAC(v), nil
}

// macValue parses mac (see NormalizeMAC) into a 48-bit number.
func macValue(mac string) (uint64, error) {
	s := strings.TrimSpace(mac)
	var hex []byte
	groups, digits, sep := 0, 0, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ':' || c == '-' || c == '.':
			if sep != 0 && c != sep || digits == 0 || i == len(s)-1 {
				return 0, fmt.Errorf("pxe: malformed MAC address %q", mac)
			}
			sep, digits = c, 0
			groups++
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			hex = append(hex, c|0x20)
			digits++
		default:
			return 0, fmt.Errorf("pxe: malformed MAC address %q: want six hex bytes such as aa:bb:cc:dd:ee:ff", mac)
		}
	}
	if len(hex) != 12 {
		return 0, fmt.Errorf("pxe: malformed MAC address %q: want six hex bytes such as aa:bb:cc:dd:ee:ff", mac)
	}
	var v uint64
	for _, c := range hex {
		d := uint64(c - '0')
		if c >= 'a' {
			d = uint64(c-'a') + 10
		}
		v = v<<4 | d
	}
	return v, nil
}

func formatMAC(v uint64) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x",
		byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// normalizeUUID returns a machine UUID as 32 lower-case hex digits with
// hyphens removed (iPXE's ${uuid} and dmidecode agree on the digits but
// not always on case), or "" with ok false when s is not one.
func normalizeUUID(s string) (string, bool) {
	s = strings.Trim(strings.TrimSpace(s), "{}")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-':
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			b.WriteByte(c | 0x20)
		default:
			return "", false
		}
	}
	if b.Len() != 32 {
		return "", false
	}
	return b.String(), true
}

// formatUUID writes a normalised UUID in its usual 8-4-4-4-12 form.
func formatUUID(u string) string {
	if len(u) != 32 {
		return u
	}
	return u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:]
}

// MACRange is an inclusive range of MAC addresses, such as a batch of
// machines from one vendor: First and Last in any form NormalizeMAC takes.
type MACRange struct {
	First, Last string
}

type macRange struct{ first, last uint64 }

func (r MACRange) parse() (macRange, error) {
	f, err := macValue(r.First)
	if err != nil {
		return macRange{}, err
	}
	l, err := macValue(r.Last)
	if err != nil {
		return macRange{}, err
	}
	if l < f {
		return macRange{}, fmt.Errorf("pxe: MAC range %s–%s ends before it starts", formatMAC(f), formatMAC(l))
	}
	return macRange{f, l}, nil
}
