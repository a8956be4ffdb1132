package execdriver

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/unit"
)

func TestParseCommands(t *testing.T) {
	tests := []struct {
		in    string
		want  [][]string // argv of each command
		path  string     // of the first command
		flags string     // of the first command: i (ignore), n (no env), r (root)
	}{
		{in: `/bin/echo a b`, want: [][]string{{"/bin/echo", "a", "b"}}, path: "/bin/echo"},
		{in: `/bin/sh -c 'echo "x y" | cat'`, want: [][]string{{"/bin/sh", "-c", `echo "x y" | cat`}}, path: "/bin/sh"},
		{in: `/bin/echo "a b"c 'd'"e"`, want: [][]string{{"/bin/echo", "a bc", "de"}}, path: "/bin/echo"},
		{in: `/bin/echo a\ b \x41\101 \t`, want: [][]string{{"/bin/echo", "a b", "AA", "\t"}}, path: "/bin/echo"},
		{in: `-/bin/false`, want: [][]string{{"/bin/false"}}, path: "/bin/false", flags: "i"},
		{in: `-@/bin/sleep mysleep 5`, want: [][]string{{"mysleep", "5"}}, path: "/bin/sleep", flags: "i"},
		{in: `:+/bin/echo $X`, want: [][]string{{"/bin/echo", "$X"}}, path: "/bin/echo", flags: "nr"},
		{in: `/bin/a ; /bin/b x ; /bin/c`, want: [][]string{{"/bin/a"}, {"/bin/b", "x"}, {"/bin/c"}}, path: "/bin/a"},
		{in: `/bin/echo \; ";"`, want: [][]string{{"/bin/echo", ";", ";"}}, path: "/bin/echo"},
		{in: `sleep 1`, want: [][]string{{"sleep", "1"}}, path: "sleep"},
	}
	for _, tt := range tests {
		cs, err := parseCommands(tt.in)
		if err != nil {
			t.Errorf("parseCommands(%q): %v", tt.in, err)
			continue
		}
		var got [][]string
		for _, c := range cs {
			got = append(got, c.argv)
		}
		if !slices.EqualFunc(got, tt.want, slices.Equal[[]string]) {
			t.Errorf("parseCommands(%q) = %q, want %q", tt.in, got, tt.want)
		}
		c := cs[0]
		flags := ""
		if c.ignore {
			flags += "i"
		}
		if c.noEnv {
			flags += "n"
		}
		if c.root {
			flags += "r"
		}
		if c.path != tt.path || flags != tt.flags {
			t.Errorf("parseCommands(%q): path %q flags %q, want %q %q", tt.in, c.path, flags, tt.path, tt.flags)
		}
	}
	for _, bad := range []string{`/bin/echo "unterminated`, `/bin/echo trailing\`, `-`, `@/bin/x`, `/bin/a ; ; /bin/b`} {
		if _, err := parseCommands(bad); err == nil {
			t.Errorf("parseCommands(%q) succeeded, want an error", bad)
		}
	}
}

func TestExpandArgs(t *testing.T) {
	env := map[string]string{"A": "one two", "B": "b", "Q": `"x y" z`}
	got := expandArgs([]string{"$A", "${A}", "x${B}y", "$B$B", "$$A", "$NOPE", "${NOPE}", "$", "$Q"}, env)
	want := []string{"one", "two", "one two", "xby", "$B$B", "$A", "", "$", "x y", "z"}
	if !slices.Equal(got, want) {
		t.Errorf("expandArgs = %q, want %q", got, want)
	}
}

func TestParseEnvironment(t *testing.T) {
	got, err := parseEnvironment([]string{`DROPPED=1`, ``, `A=1 "B=two words" C='x y'`, `D=a\tb E=`})
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"A", "1"}, {"B", "two words"}, {"C", "x y"}, {"D", "a\tb"}, {"E", ""}}
	if !slices.Equal(got, want) {
		t.Errorf("parseEnvironment = %q, want %q", got, want)
	}
	if _, err := parseEnvironment([]string{`NOTANASSIGNMENT`}); err == nil {
		t.Error("parseEnvironment accepted a word without '='")
	}
}

func TestParseEnvFile(t *testing.T) {
	src := "# comment\n; another\n" +
		"A=plain\n" +
		"  B = spaced value   \n" +
		"C='single $quoted \\n'\n" +
		"D=\"double \\\"q\\\" \\$HOME \\n\"\n" +
		"E=con\\\ntinued\n" +
		"F=\"multi\nline\"\n" +
		"no equals sign\n" +
		"G=\n" +
		"H=a'b c'\"d\"\r\n" +
		"I=last"
	got, err := parseEnvFile(src)
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{
		{"A", "plain"}, {"B", "spaced value"}, {"C", `single $quoted \n`}, {"D", `double "q" $HOME \n`},
		{"E", "continued"}, {"F", "multi\nline"}, {"G", ""}, {"H", "ab cd"}, {"I", "last"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseEnvFile =\n%q\nwant\n%q", got, want)
	}
	if _, err := parseEnvFile("1BAD=x\n"); err == nil {
		t.Error("parseEnvFile accepted an invalid name")
	}
}

func TestParseTimespan(t *testing.T) {
	tests := map[string]time.Duration{
		"90": 90 * time.Second, "5s": 5 * time.Second, "100ms": 100 * time.Millisecond,
		"1min 30s": 90 * time.Second, "1min30s": 90 * time.Second, "2.5s": 2500 * time.Millisecond,
		"1h": time.Hour, "infinity": 0, "0": 0, "3 sec": 3 * time.Second, "20us": 20 * time.Microsecond,
	}
	for in, want := range tests {
		got, err := parseTimespan(in)
		if err != nil || got != want {
			t.Errorf("parseTimespan(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "5 parsecs", "abc", "1x"} {
		if _, err := parseTimespan(bad); err == nil {
			t.Errorf("parseTimespan(%q) succeeded", bad)
		}
	}
}

func TestParseSpec(t *testing.T) {
	s := mustSpec(t, `
[Unit]
Description=web
Requires=db.service
BindsTo=db.service
After=db.service network-online.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=-/bin/true
ExecStart=/bin/a
ExecStart=/bin/b
ExecStop=/bin/c
Restart=on-failure
RestartSec=2s
TimeoutStopSec=5
KillSignal=SIGINT
Environment=A=1
EnvironmentFile=-/etc/x.env
WorkingDirectory=~
User=nobody
KillMode=mixed
`)
	if !s.oneshot || !s.remain || len(s.pre) != 1 || !s.pre[0].ignore || len(s.start) != 2 || len(s.stop) != 1 {
		t.Errorf("commands: %+v", s)
	}
	if s.restart != "on-failure" || s.restartSec != 2*time.Second || s.stopTimeout != 5*time.Second || s.startTimeout != 0 {
		t.Errorf("timing: restart %s %v stop %v start %v", s.restart, s.restartSec, s.stopTimeout, s.startTimeout)
	}
	if s.killSignal.String() != "interrupt" || s.user != "nobody" || s.workDir.path != "~" || !s.envFiles[0].optional {
		t.Errorf("exec options: %+v", s)
	}
	if !slices.Equal(s.after, []string{"db.service", "network-online.target"}) || !slices.Equal(s.bindsTo, []string{"db.service"}) {
		t.Errorf("dependencies: after %q binds %q", s.after, s.bindsTo)
	}
	if len(s.warnings) != 1 || !strings.Contains(s.warnings[0], "KillMode") {
		t.Errorf("warnings = %q, want one about KillMode", s.warnings)
	}

	for _, bad := range []string{
		"[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n", // two for simple
		"[Service]\nType=simple\n",                        // none
		"[Service]\nType=forking\nExecStart=/bin/a\n",
		"[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=always\n",
		"[Service]\nExecStart=/bin/a\nRestart=sometimes\n",
		"[Service]\nExecStart=/bin/a\nTimeoutStopSec=soon\n",
		"[Service]\nExecStart=/bin/a\nEnvironmentFile=relative.env\n",
		"[Service]\nExecStart=/bin/a\nKillSignal=SIGNOPE\n",
	} {
		f, err := unit.Parse("bad.service", []byte(bad))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseSpec(f); err == nil {
			t.Errorf("parseSpec accepted:\n%s", bad)
		}
	}
	// An empty assignment resets a list, as in systemd drop-ins.
	if s := mustSpec(t, "[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n"); s.start[0].path != "/bin/b" {
		t.Errorf("reset: ExecStart = %q", s.start[0].path)
	}
}

func mustSpec(t *testing.T, src string) *spec {
	t.Helper()
	f, err := unit.Parse("test.service", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseSpec(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "1234 (a b) (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0 256\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.pgrp != 1234 || st.start != 987654 || !st.hasExit || st.exitStatus().Status != 1 {
		t.Errorf("parseStat = %+v", st)
	}
	// Our own stat parses, and its start time is stable.
	a, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := readStat(os.Getpid())
	if a.start == 0 || a.start != b.start {
		t.Errorf("own start time %d then %d", a.start, b.start)
	}
}

func TestJournalTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.log")
	if err := os.WriteFile(path+".1", []byte("o1\no2\no3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("c1\nc2\nc3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tail := func(n int) string {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		var b strings.Builder
		if err := writeTail(path, f, st.Size(), n, &b); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	for n, want := range map[int]string{
		1: "c3\n", 2: "c2\nc3\n", 3: "c1\nc2\nc3\n", 4: "o3\nc1\nc2\nc3\n",
		-1: "o1\no2\no3\nc1\nc2\nc3\n", 10: "o1\no2\no3\nc1\nc2\nc3\n",
	} {
		if got := tail(n); got != want {
			t.Errorf("tail %d = %q, want %q", n, got, want)
		}
	}
	// Rotation by the writer: past the limit, the file moves to .1.
	j := &journalFile{path: path, max: 10}
	if err := j.writeLine([]byte("a line longer than ten bytes")); err != nil {
		t.Fatal(err)
	}
	j.close()
	if b, _ := os.ReadFile(path + ".1"); !strings.Contains(string(b), "c3\n") || !strings.HasSuffix(string(b), " a line longer than ten bytes\n") {
		t.Errorf("after rotation, .1 = %q", b)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("after rotation the journal should start afresh; stat: %v", err)
	}
}
