package execdriver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// command is one parsed Exec*= command line.
type command struct {
	raw    string   // as written, for messages
	path   string   // the executable, before expansion
	argv   []string // argv[0] included, before expansion
	ignore bool     // "-": a failure is ignored
	noEnv  bool     // ":": no variable expansion
	root   bool     // "+", "!", "!!": run with full privileges, ignoring User= and Group=
}

// word is one word of a line split as systemd splits it.
type word struct {
	text string
	semi bool // a bare, unquoted, unescaped ";": separates commands on one line
}

// splitWords splits s into words as systemd's extract_first_word does with
// EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE: words are separated by blanks; single
// and double quotes group blanks into a word and may start or end inside
// one ("a"b is ab); C escapes (\n, \t, \x41, \101, \u00e9, "\ ", \;) are
// processed in and out of quotes. No shell is involved, so $ | > & * mean
// nothing here. If relaxed, an unterminated quote or trailing backslash is
// accepted as if closed, as systemd does when splitting variable values.
func splitWords(s string, relaxed bool) ([]word, error) {
	var (
		out   []word
		cur   strings.Builder
		in    bool // inside a word
		quote byte // 0, '\'' or '"'
		// plain: the word so far is exactly what was typed, with no quotes
		// or escapes, so a lone ";" can be told from "\;" or ";" in quotes.
		plain bool
	)
	flush := func() {
		if in {
			text := cur.String()
			out = append(out, word{text: text, semi: plain && text == ";"})
		}
		cur.Reset()
		in, plain = false, false
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case quote == 0 && isBlank(c):
			flush()
			i++
		case c == '\\':
			if !in {
				in = true
			}
			plain = false
			if i+1 >= len(s) {
				if !relaxed {
					return nil, errors.New("trailing backslash")
				}
				i++
				continue
			}
			r, n, err := unescape(s[i+1:])
			if err != nil {
				return nil, err
			}
			cur.WriteString(r)
			i += 1 + n
		case quote != 0 && c == quote:
			quote = 0
			i++
		case quote == 0 && (c == '\'' || c == '"'):
			if !in {
				in = true
			}
			plain = false
			quote = c
			i++
		default:
			if !in {
				in, plain = true, true
			}
			cur.WriteByte(c)
			i++
		}
	}
	if quote != 0 && !relaxed {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	flush()
	return out, nil
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// unescape decodes the C escape at the start of s (after the backslash),
// returning the text and how many bytes of s it used. An escape systemd
// does not know stands for the character itself, which is what a user who
// writes \$ or \. means.
func unescape(s string) (string, int, error) {
	switch c := s[0]; c {
	case 'a':
		return "\a", 1, nil
	case 'b':
		return "\b", 1, nil
	case 'f':
		return "\f", 1, nil
	case 'n':
		return "\n", 1, nil
	case 'r':
		return "\r", 1, nil
	case 't':
		return "\t", 1, nil
	case 'v':
		return "\v", 1, nil
	case 's':
		return " ", 1, nil
	case 'x':
		if len(s) < 3 {
			return "", 0, errors.New(`short \x escape`)
		}
		n, err := strconv.ParseUint(s[1:3], 16, 8)
		if err != nil {
			return "", 0, fmt.Errorf(`bad \x escape %q`, s[:3])
		}
		return string([]byte{byte(n)}), 3, nil
	case 'u', 'U':
		size := 4
		if c == 'U' {
			size = 8
		}
		if len(s) < 1+size {
			return "", 0, fmt.Errorf(`short \%c escape`, c)
		}
		n, err := strconv.ParseUint(s[1:1+size], 16, 32)
		if err != nil || !utf8.ValidRune(rune(n)) {
			return "", 0, fmt.Errorf(`bad \%c escape %q`, c, s[:1+size])
		}
		return string(rune(n)), 1 + size, nil
	case '0', '1', '2', '3', '4', '5', '6', '7':
		if len(s) < 3 {
			return "", 0, errors.New("short octal escape")
		}
		n, err := strconv.ParseUint(s[:3], 8, 8)
		if err != nil {
			return "", 0, fmt.Errorf("bad octal escape %q", s[:3])
		}
		return string([]byte{byte(n)}), 3, nil
	}
	_, n := utf8.DecodeRuneInString(s)
	return s[:n], n, nil
}

// parseCommands parses one Exec*= value: prefixes, words, and ";"
// separating several commands (systemd accepts that for every Exec*=
// option but, unless Type=oneshot, ExecStart=).
func parseCommands(value string) ([]command, error) {
	words, err := splitWords(value, false)
	if err != nil {
		return nil, err
	}
	var (
		out []command
		cur []string
	)
	end := func() error {
		if len(cur) == 0 {
			return errors.New("empty command")
		}
		c, err := newCommand(cur)
		if err != nil {
			return err
		}
		c.raw = strings.Join(cur, " ")
		out = append(out, c)
		cur = nil
		return nil
	}
	for _, w := range words {
		if w.semi {
			if err := end(); err != nil {
				return nil, err
			}
			continue
		}
		cur = append(cur, w.text)
	}
	if len(cur) > 0 || len(out) == 0 {
		if err := end(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// newCommand reads the prefixes of words[0] (systemd.service(5), "Command
// lines") and builds the command.
func newCommand(words []string) (command, error) {
	var c command
	first := words[0]
	argv0 := false
prefixes:
	for len(first) > 0 {
		switch first[0] {
		case '-':
			c.ignore = true
		case '@':
			argv0 = true
		case ':':
			c.noEnv = true
		case '+':
			c.root = true
		case '!':
			// "!" and "!!" lift the privilege restrictions of User=; without
			// a sandbox to lift, that is the same as "+".
			c.root = true
		default:
			break prefixes
		}
		first = first[1:]
	}
	if first == "" {
		return c, errors.New("no executable after the prefixes")
	}
	c.path = first
	if argv0 {
		if len(words) < 2 {
			return c, errors.New(`"@" needs the argv[0] to pass as the second word`)
		}
		c.argv = append([]string{words[1]}, words[2:]...)
	} else {
		c.argv = append([]string{first}, words[1:]...)
	}
	return c, nil
}

// expandArgs replaces environment variable references in args as systemd
// does at exec time: a word that is exactly $NAME becomes the variable's
// value split at blanks (zero or more words); ${NAME} anywhere is replaced
// by the value as it is, inside the one word; $$ is a literal $. Any other
// $ is left alone. Unset variables expand to nothing.
func expandArgs(args []string, env map[string]string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if len(a) > 1 && a[0] == '$' && validEnvName(a[1:]) {
			ws, _ := splitWords(env[a[1:]], true)
			for _, w := range ws {
				out = append(out, w.text)
			}
			continue
		}
		out = append(out, expandBraces(a, env))
	}
	return out
}

func expandBraces(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 || !validEnvName(s[i+2:i+2+end]) {
				b.WriteByte('$')
				continue
			}
			b.WriteString(env[s[i+2:i+2+end]])
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// validEnvName reports whether s is a shell-style variable name, the only
// names systemd expands.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// parseEnvironment reads the Environment= values of a unit in order: each
// holds blank-separated, possibly quoted, NAME=VALUE assignments, and an
// empty value resets the list (systemd.exec(5)). Assignments that are not
// NAME=VALUE are reported.
func parseEnvironment(values []string) ([][2]string, error) {
	var out [][2]string
	for _, v := range values {
		if v == "" {
			out = nil
			continue
		}
		words, err := splitWords(v, false)
		if err != nil {
			return nil, fmt.Errorf("Environment=%s: %w", v, err)
		}
		for _, w := range words {
			name, value, ok := strings.Cut(w.text, "=")
			if !ok || !validEnvName(name) {
				return nil, fmt.Errorf("Environment=%s: %q is not an assignment NAME=VALUE", v, w.text)
			}
			out = append(out, [2]string{name, value})
		}
	}
	return out, nil
}

// parseEnvFile reads an EnvironmentFile= as systemd does (its
// load_env_file): NAME=VALUE lines; '#' and ';' start comment lines; blanks
// around the name and before the value are dropped, and after an unquoted
// value too; single quotes keep everything literally; in double quotes a
// backslash escapes " \ ` $ and a newline; outside quotes a backslash
// escapes any character, and a backslash at the end of a line continues
// it. Quoted and unquoted parts join, as in a shell. Lines without '=' are
// skipped, as systemd skips them; names that are not valid are reported.
func parseEnvFile(src string) ([][2]string, error) {
	const (
		preKey = iota
		key
		preValue
		value
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
		comment
		commentEscape
	)
	var (
		out       [][2]string
		state     = preKey
		k, v      strings.Builder
		lastBlank int // length of v before the trailing blanks of an unquoted run
		line      = 1
		errs      []error
	)
	push := func() {
		name := strings.TrimRight(k.String(), " \t")
		if !validEnvName(name) {
			errs = append(errs, fmt.Errorf("line %d: %q is not a valid variable name", line, name))
		} else {
			out = append(out, [2]string{name, v.String()[:lastBlank]})
		}
		k.Reset()
		v.Reset()
		lastBlank = 0
	}
	for i := 0; i <= len(src); i++ {
		c := byte('\n') // the end of the file ends the last line
		if i < len(src) {
			c = src[i]
		}
		nl := c == '\n' || c == '\r'
		switch state {
		case preKey:
			switch {
			case c == '#' || c == ';':
				state = comment
			case !isBlank(c):
				state = key
				k.WriteByte(c)
			}
		case key:
			switch {
			case nl:
				k.Reset() // no '=': not an assignment
				state = preKey
			case c == '=':
				state = preValue
			default:
				k.WriteByte(c)
			}
		case preValue, value:
			switch {
			case nl:
				if state == preValue {
					lastBlank = v.Len()
				}
				push()
				state = preKey
			case c == '\'':
				state = singleQuote
			case c == '"':
				state = doubleQuote
			case c == '\\':
				state = valueEscape
			case state == preValue && isBlank(c):
			default:
				state = value
				v.WriteByte(c)
				if !isBlank(c) {
					lastBlank = v.Len()
				}
			}
		case valueEscape:
			state = value
			if c != '\n' {
				v.WriteByte(c)
				lastBlank = v.Len()
			}
		case singleQuote:
			if c == '\'' {
				state = preValue
				lastBlank = v.Len()
			} else {
				v.WriteByte(c)
			}
		case doubleQuote:
			switch c {
			case '"':
				state = preValue
				lastBlank = v.Len()
			case '\\':
				state = doubleQuoteEscape
			default:
				v.WriteByte(c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			switch c {
			case '"', '\\', '`', '$':
				v.WriteByte(c)
			case '\n':
			default:
				v.WriteByte('\\')
				v.WriteByte(c)
			}
		case comment:
			if c == '\\' {
				state = commentEscape
			} else if nl {
				state = preKey
			}
		case commentEscape:
			state = comment
		}
		if c == '\n' {
			line++
		}
	}
	if state == singleQuote || state == doubleQuote || state == doubleQuoteEscape {
		errs = append(errs, errors.New("unterminated quote at the end of the file"))
	}
	return out, errors.Join(errs...)
}
