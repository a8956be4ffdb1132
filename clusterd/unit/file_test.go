package unit

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// opts is a compact way to write a parsed file in tests: sections and
// their options, without line numbers.
type sec struct {
	name string
	opts [][2]string
}

func shape(f *File) []sec {
	var out []sec
	for _, s := range f.Sections {
		v := sec{name: s.Name}
		for _, o := range s.Options {
			v.opts = append(v.opts, [2]string{o.Name, o.Value})
		}
		out = append(out, v)
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []sec
	}{
		{
			name: "empty",
			src:  "",
			want: nil,
		},
		{
			name: "comments and blank lines",
			src:  "# comment\n; also a comment\n\n[Unit]\n  # indented comment\nDescription=x\n",
			want: []sec{{"Unit", [][2]string{{"Description", "x"}}}},
		},
		{
			name: "whitespace trimmed around key and value",
			src:  "[Service]\n  ExecStart =  /bin/true  -x  \t\n",
			want: []sec{{"Service", [][2]string{{"ExecStart", "/bin/true  -x"}}}},
		},
		{
			name: "first '=' splits key and value",
			src:  "[Service]\nEnvironment=A=b=c\n",
			want: []sec{{"Service", [][2]string{{"Environment", "A=b=c"}}}},
		},
		{
			name: "empty value kept",
			src:  "[Service]\nExecStart=\n",
			want: []sec{{"Service", [][2]string{{"ExecStart", ""}}}},
		},
		{
			name: "repeated options and sections keep order",
			src:  "[Service]\nExecStartPre=a\nExecStartPre=b\n[X-Fleet]\nConflicts=x\n[Service]\nExecStart=c\n",
			want: []sec{
				{"Service", [][2]string{{"ExecStartPre", "a"}, {"ExecStartPre", "b"}}},
				{"X-Fleet", [][2]string{{"Conflicts", "x"}}},
				{"Service", [][2]string{{"ExecStart", "c"}}},
			},
		},
		{
			name: "unknown sections and options kept",
			src:  "[X-Custom]\nFoo=bar\n[Unit]\nWhatever=1\n",
			want: []sec{{"X-Custom", [][2]string{{"Foo", "bar"}}}, {"Unit", [][2]string{{"Whatever", "1"}}}},
		},
		{
			name: "empty section kept",
			src:  "[Unit]\n[Install]\n",
			want: []sec{{"Unit", nil}, {"Install", nil}},
		},
		{
			name: "continuation: backslash becomes a space, next line kept as is",
			src:  "[Service]\nExecStart=/bin/sh -c \\\n  'echo hi'\n",
			want: []sec{{"Service", [][2]string{{"ExecStart", "/bin/sh -c    'echo hi'"}}}},
		},
		{
			name: "comment inside a continuation is skipped",
			src:  "[Service]\nExecStart=/bin/echo a \\\n# not part of it\n  b\n",
			want: []sec{{"Service", [][2]string{{"ExecStart", "/bin/echo a    b"}}}},
		},
		{
			name: "comment ending in a backslash does not continue",
			src:  "[Unit]\n# comment \\\nDescription=x\n",
			want: []sec{{"Unit", [][2]string{{"Description", "x"}}}},
		},
		{
			name: "escaped backslash does not continue",
			src:  "[Service]\nExecStart=/bin/echo \\\\\nExecStop=/bin/true\n",
			want: []sec{{"Service", [][2]string{{"ExecStart", `/bin/echo \\`}, {"ExecStop", "/bin/true"}}}},
		},
		{
			name: "continuation at end of file",
			src:  "[Service]\nExecStart=/bin/true \\",
			want: []sec{{"Service", [][2]string{{"ExecStart", "/bin/true"}}}},
		},
		{
			name: "CRLF and BOM",
			src:  "\xef\xbb\xbf[Unit]\r\nDescription=x\r\n",
			want: []sec{{"Unit", [][2]string{{"Description", "x"}}}},
		},
		{
			name: "no final newline",
			src:  "[Unit]\nDescription=x",
			want: []sec{{"Unit", [][2]string{{"Description", "x"}}}},
		},
		{
			name: "specifiers and quotes untouched",
			src:  "[Service]\nExecStart=/bin/sh -c \"echo %i 100%%\"\n",
			want: []sec{{"Service", [][2]string{{"ExecStart", `/bin/sh -c "echo %i 100%%"`}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("test.service", []byte(tt.src))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := shape(f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseLines(t *testing.T) {
	src := "# c\n[Unit]\nDescription=x\n\n[Service]\nExecStart=a \\\n  b \\\n  c\nExecStop=d\n"
	f, err := Parse("x.service", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	type pos struct {
		what string
		line int
	}
	var got []pos
	for _, s := range f.Sections {
		got = append(got, pos{"[" + s.Name + "]", s.Line})
		for _, o := range s.Options {
			got = append(got, pos{o.Name, o.Line})
		}
	}
	want := []pos{{"[Unit]", 2}, {"Description", 3}, {"[Service]", 5}, {"ExecStart", 6}, {"ExecStop", 9}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lines: got %v, want %v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // each line of the error, in order
	}{
		{
			name: "missing '='",
			src:  "[Unit]\nDescription=x\n\nthis is not an option\n",
			want: []string{`hello@.service:4: expected Key=Value, got "this is not an option"`},
		},
		{
			name: "empty key",
			src:  "[Unit]\n=x\n",
			want: []string{`hello@.service:2: expected Key=Value, got "=x"`},
		},
		{
			name: "option before any section",
			src:  "Description=x\n[Unit]\n",
			want: []string{`hello@.service:1: Description=x comes before any [Section]; put it under [Unit], [Service] or [X-Fleet]`},
		},
		{
			name: "unterminated section header",
			src:  "[Unit\n",
			want: []string{`hello@.service:1: expected [Section], got "[Unit"`},
		},
		{
			name: "empty section name",
			src:  "[]\n",
			want: []string{`hello@.service:1: bad section name "[]"`},
		},
		{
			name: "blank around section name",
			src:  "[ Unit ]\n",
			want: []string{`hello@.service:1: bad section name "[ Unit ]"`},
		},
		{
			name: "NUL byte",
			src:  "[Unit]\nDescription=a\x00b\n",
			want: []string{`hello@.service:2: contains a NUL byte; is this a unit file?`},
		},
		{
			name: "backslash followed by blanks",
			src:  "[Service]\nExecStart=/bin/sh -c \\  \n  echo hi\n",
			want: []string{`hello@.service:2: the line ends with a backslash followed by blanks; remove the blanks to continue the line`},
		},
		{
			name: "backslash followed by blanks on the last line",
			src:  "[Service]\nExecStart=/bin/true \\ ",
			want: []string{`hello@.service:2: the line ends with a backslash followed by blanks; remove the blanks to continue the line`},
		},
		{
			name: "error in a continued line names its first line",
			src:  "[Service]\nnot \\\nan option\n",
			want: []string{`hello@.service:2: expected Key=Value, got "not  an option"`},
		},
		{
			name: "every error reported",
			src:  "[Unit]\nbad one\nDescription=x\nbad two\n",
			want: []string{
				`hello@.service:2: expected Key=Value, got "bad one"`,
				`hello@.service:4: expected Key=Value, got "bad two"`,
			},
		},
		{
			name: "long lines shortened",
			src:  "[Unit]\n" + strings.Repeat("x", 100) + "\n",
			want: []string{`hello@.service:2: expected Key=Value, got "` + strings.Repeat("x", 60) + `..."`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("hello@.service", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %q", shape(f))
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("error:\ngot  %q\nwant %q", got, tt.want)
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Line == 0 || ue.File != "hello@.service" {
				t.Errorf("error %#v does not carry file and line", err)
			}
		})
	}
}

func TestParseErrorsCapped(t *testing.T) {
	src := "[Unit]\n" + strings.Repeat("junk\n", 25)
	_, err := Parse("x.service", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 || lines[maxErrors] != "x.service: and 15 more problems" {
		t.Errorf("got %d lines, last %q", len(lines), lines[len(lines)-1])
	}
}

func TestValues(t *testing.T) {
	f := mustParse(t, "[Service]\nExecStartPre=a\nExecStart=x\n[Unit]\nExecStartPre=not this\n[Service]\nExecStartPre=b\nExecStartPre=\n")
	tests := []struct {
		section, option string
		values          []string
		value           string
	}{
		{"Service", "ExecStartPre", []string{"a", "b", ""}, ""},
		{"Service", "ExecStart", []string{"x"}, "x"},
		{"Unit", "ExecStartPre", []string{"not this"}, "not this"},
		{"Service", "Missing", nil, ""},
		{"Missing", "ExecStart", nil, ""},
		{"service", "ExecStart", nil, ""}, // names are case-sensitive, as in systemd
	}
	for _, tt := range tests {
		if got := f.Values(tt.section, tt.option); !reflect.DeepEqual(got, tt.values) {
			t.Errorf("Values(%s, %s) = %q, want %q", tt.section, tt.option, got, tt.values)
		}
		if got := f.Value(tt.section, tt.option); got != tt.value {
			t.Errorf("Value(%s, %s) = %q, want %q", tt.section, tt.option, got, tt.value)
		}
	}
}

func TestBytes(t *testing.T) {
	f := mustParse(t, "# c\n[Unit]\n Description = x \n\n\n[Service]\nExecStart=a \\\n b\n[X-Fleet]\n")
	want := "[Unit]\nDescription=x\n\n[Service]\nExecStart=a   b\n\n[X-Fleet]\n"
	if got := string(f.Bytes()); got != want {
		t.Errorf("Bytes:\n%s\nwant:\n%s", got, want)
	}
	if f.String() != want {
		t.Errorf("String differs from Bytes")
	}
}

func TestRoundTripAndHash(t *testing.T) {
	// Each group holds spellings of one unit: same Bytes, same Hash.
	groups := [][]string{
		{
			"[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/hello\n\n[X-Fleet]\nConflicts=hello@*\n",
			"# a comment\n[Unit]\nDescription = Hello\n[Service]\n\n  ExecStart=/bin/hello   \n; another\n[X-Fleet]\r\nConflicts=hello@*",
			"\xef\xbb\xbf[Unit]\n\tDescription=Hello\n\n\n[Service]\n# c \\\nExecStart=/bin/hello\n[X-Fleet]\nConflicts=hello@*\n\n",
		},
		{
			"[Service]\nExecStart=/bin/sh -c 'a; \\\nb'\n",
			"[Service]\nExecStart=/bin/sh -c 'a; \\\n# skipped\nb'\n",
		},
	}
	var hashes []string
	for gi, g := range groups {
		var first *File
		for i, src := range g {
			f := mustParse(t, src)
			again, err := Parse("again", f.Bytes())
			if err != nil {
				t.Fatalf("group %d spelling %d: reparse: %v", gi, i, err)
			}
			if !reflect.DeepEqual(shape(again), shape(f)) {
				t.Errorf("group %d spelling %d: round trip changed the file:\n%q\n%q", gi, i, shape(f), shape(again))
			}
			if first == nil {
				first = f
				hashes = append(hashes, f.Hash())
				continue
			}
			if f.Hash() != first.Hash() {
				t.Errorf("group %d spelling %d: hash %s, want %s\n%s\nvs\n%s", gi, i, f.Hash(), first.Hash(), f.Bytes(), first.Bytes())
			}
		}
	}
	if hashes[0] == hashes[1] {
		t.Error("different units hash the same")
	}
	if len(hashes[0]) != 40 || strings.Trim(hashes[0], "0123456789abcdef") != "" {
		t.Errorf("hash %q is not hex SHA-1", hashes[0])
	}
	// A change of value or of order is a change of unit.
	base := mustParse(t, groups[0][0]).Hash()
	for _, src := range []string{
		"[Unit]\nDescription=Hello!\n\n[Service]\nExecStart=/bin/hello\n\n[X-Fleet]\nConflicts=hello@*\n",
		"[Service]\nExecStart=/bin/hello\n\n[Unit]\nDescription=Hello\n\n[X-Fleet]\nConflicts=hello@*\n",
	} {
		if mustParse(t, src).Hash() == base {
			t.Errorf("%q hashes like the original", src)
		}
	}
	// The hash is of the canonical bytes, fixed for all time: units
	// stored by one version are found by the next.
	if got, want := mustParse(t, "[Service]\nExecStart=/bin/true\n").Hash(), "86943ac9f3754cb90f8dd38bf6da7b0cad074592"; got != want {
		t.Errorf("hash changed: got %s, want %s", got, want)
	}
}

func TestClone(t *testing.T) {
	f := mustParse(t, "[Service]\nExecStart=a\n")
	c := f.Clone()
	c.Sections[0].Options[0].Value = "changed"
	c.Sections[0].Options = append(c.Sections[0].Options, &Option{Name: "X", Value: "y"})
	c.Sections = append(c.Sections, &Section{Name: "New"})
	if got := f.String(); got != "[Service]\nExecStart=a\n" {
		t.Errorf("changing the clone changed the original: %q", got)
	}
	if (*File)(nil).Clone() != nil {
		t.Error("Clone of nil is not nil")
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "a.service", Line: 3, Msg: "m"}, "a.service:3: m"},
		{Error{File: "a.service", Msg: "m"}, "a.service: m"},
		{Error{Line: 3, Msg: "m"}, "line 3: m"},
		{Error{Msg: "m"}, "m"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v: got %q, want %q", tt.e, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"[Unit]\nDescription=x\n",
		"[Service]\nExecStart=a \\\n b \\\\\nX=\\",
		"# c\n[X-Fleet]\nConflicts=\"a b\" c\n",
		"[a]b]\n k\\ = v \r\n",
		"[U]\nX=a\\\v\nY=b\\\r\r\nZ=\u00a0c\u00a0\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		u, err := Parse("fuzz", src)
		if err != nil {
			return
		}
		again, err := Parse("again", u.Bytes())
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%q", err, u.Bytes())
		}
		if !reflect.DeepEqual(shape(again), shape(u)) {
			t.Fatalf("round trip changed the file:\n%q\n%q", shape(u), shape(again))
		}
		if again.Hash() != u.Hash() {
			t.Fatal("hash changed on round trip")
		}
	})
}

func mustParse(t testing.TB, src string) *File {
	t.Helper()
	f, err := Parse("test.service", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}
