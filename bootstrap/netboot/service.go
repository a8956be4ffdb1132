package netboot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

// ClusterdUnit is the unit the init runs.
const ClusterdUnit = "clusterd.service"

// Service is what the init takes from a unit's [Service] section.
type Service struct {
	// EnvironmentFiles in order; a leading '-' marks an optional one.
	EnvironmentFiles []string
	// ExecStartPre and ExecStart are split into words, with quotes and
	// escapes resolved but $ and % left for Expand.
	ExecStartPre [][]string
	ExecStart    []string
	Environment  []string // Environment= assignments, KEY=VALUE
	RestartSec   time.Duration
	LimitNOFILE  uint64 // 0: unset
}

// ParseService reads a unit file.
func ParseService(r io.Reader) (*Service, error) {
	opts, err := unit.DeserializeOptions(r)
	if err != nil {
		return nil, err
	}
	s := &Service{RestartSec: 100 * time.Millisecond} // systemd's default
	for _, o := range opts {
		if o.Section != "Service" {
			continue
		}
		v := strings.TrimSpace(o.Value)
		switch o.Name {
		case "EnvironmentFile":
			if v == "" {
				s.EnvironmentFiles = nil
			} else {
				s.EnvironmentFiles = append(s.EnvironmentFiles, v)
			}
		case "Environment":
			words, err := SplitExec(v)
			if err != nil {
				return nil, fmt.Errorf("Environment=%s: %w", v, err)
			}
			s.Environment = append(s.Environment, words...)
		case "ExecStartPre":
			if v == "" {
				s.ExecStartPre = nil
				continue
			}
			words, err := SplitExec(v)
			if err != nil {
				return nil, fmt.Errorf("ExecStartPre=%s: %w", v, err)
			}
			s.ExecStartPre = append(s.ExecStartPre, words)
		case "ExecStart":
			words, err := SplitExec(v)
			if err != nil {
				return nil, fmt.Errorf("ExecStart=%s: %w", v, err)
			}
			s.ExecStart = words
		case "RestartSec":
			d, err := ParseTimespan(v)
			if err != nil {
				return nil, fmt.Errorf("RestartSec=%s: %w", v, err)
			}
			s.RestartSec = d
		case "LimitNOFILE":
			if v == "infinity" {
				s.LimitNOFILE = 1 << 20
			} else if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				s.LimitNOFILE = n
			}
		}
	}
	if len(s.ExecStart) == 0 {
		return nil, errors.New("the unit has no ExecStart")
	}
	return s, nil
}

// ParseTimespan reads a systemd time span: "5s", "1min 30s", "500ms", or
// a bare number of seconds.
func ParseTimespan(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	var total time.Duration
	for _, f := range strings.Fields(v) {
		f = strings.NewReplacer("min", "m", "sec", "s", "hr", "h").Replace(f)
		d, err := time.ParseDuration(f)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// SplitExec splits a command line as systemd does: words separated by
// blanks (a backslash-newline is a blank), double- or single-quoted words
// with C escapes. '$' and '%' are left alone.
func SplitExec(line string) ([]string, error) {
	line = strings.ReplaceAll(line, "\\\n", " ")
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0 && r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(unescape(rs[i]))
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(unescape(rs[i]))
			inWord = true
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func unescape(r rune) rune {
	switch r {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	}
	return r
}

// Expand substitutes a command's variables from env as systemd does:
// ${VAR} inside a word, a word that is exactly $VAR split on blanks, $$ a
// dollar, %% a percent. It also strips the executable's prefixes ('-',
// '@', '+', '!', ':'), reporting whether '-' (ignore failure) was one.
func Expand(words []string, env map[string]string) (out []string, ignoreFailure bool) {
	for i, w := range words {
		if i == 0 {
			for len(w) > 0 && strings.ContainsRune("-@+!:", rune(w[0])) {
				ignoreFailure = ignoreFailure || w[0] == '-'
				w = w[1:]
			}
		}
		if name, ok := strings.CutPrefix(w, "$"); ok && isVarName(name) {
			out = append(out, strings.Fields(env[name])...)
			continue
		}
		var b strings.Builder
		for j := 0; j < len(w); j++ {
			c := w[j]
			switch {
			case c == '$' && j+1 < len(w) && w[j+1] == '$':
				b.WriteByte('$')
				j++
			case c == '%' && j+1 < len(w) && w[j+1] == '%':
				b.WriteByte('%')
				j++
			case c == '$' && j+1 < len(w) && w[j+1] == '{':
				end := strings.IndexByte(w[j:], '}')
				if end < 0 {
					b.WriteString(w[j:])
					j = len(w)
					continue
				}
				b.WriteString(env[w[j+2:j+end]])
				j += end
			default:
				b.WriteByte(c)
			}
		}
		out = append(out, b.String())
	}
	return out, ignoreFailure
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// ReadEnvironment reads the environment files (paths under root) in order
// into env, later assignments winning. A missing optional ('-') file is
// skipped; a missing required one is an error.
func ReadEnvironment(root string, files []string, env map[string]string) error {
	for _, f := range files {
		optional := strings.HasPrefix(f, "-")
		f = strings.TrimPrefix(f, "-")
		data, err := os.ReadFile(under(root, f))
		if err != nil {
			if optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("EnvironmentFile=%s: %w", f, err)
		}
		parseEnv(string(data), env)
	}
	return nil
}

// parseEnv reads KEY=VALUE lines; '#' and ';' start comments; values may
// be quoted.
func parseEnv(data string, env map[string]string) {
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(strings.TrimPrefix(k, "export ")), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			if words, err := SplitExec(v); err == nil && len(words) == 1 {
				v = words[0]
			} else {
				v = v[1 : len(v)-1]
			}
		}
		env[k] = v
	}
}

// detectIPName is the script clusterd.service runs first when the node's
// address is not known in advance (templates: corral-detect-ip OUTPUT
// [SERVER-IP]). The init does its job itself: there is no shell here.
const detectIPName = "corral-detect-ip"

// IPVariable is the variable the script sets.
const IPVariable = "CLUSTERD_IP"

// DetectIPStep tells whether an ExecStartPre command is the IP-detection
// script, and if so, the file it writes and the server it routes towards
// ("" for none).
func DetectIPStep(words []string) (out, target string, ok bool) {
	if len(words) < 2 || path.Base(strings.TrimLeft(words[0], "-@+!:")) != detectIPName {
		return "", "", false
	}
	if len(words) > 2 {
		target = words[2]
	}
	return words[1], target, true
}

// WriteIPEnv writes what the detection script would: CLUSTERD_IP=<ip>.
func WriteIPEnv(root, file, ip string) error {
	p := under(root, file)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return writeAtomic(p, []byte(IPVariable+"="+ip+"\n"), 0o644)
}
