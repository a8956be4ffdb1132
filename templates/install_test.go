package templates

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// installState is the end state Install describes, in the terms the
// renderers' equivalence test reads their configs back in.
func installState(in Install) endState {
	s := endState{Hostname: in.Hostname, Keys: in.SSHAuthorizedKeys, Files: map[string]fileState{}, Units: map[string]unitState{}}
	for _, f := range in.Files {
		s.Files[f.Path] = fileState{Content: string(f.Content), Mode: int(f.Mode), Owner: f.Owner}
	}
	s.Files[in.BinaryPath] = fileState{Content: "fetch " + in.Binary.URL + " sha512-" + in.Binary.SHA512, Mode: 0o755}
	for _, u := range in.Units {
		s.Units[u.Name] = unitState{Content: u.Content, Enabled: u.Enabled}
	}
	return s
}

// TestInstallSameEndState: what Install lists is exactly what the Ignition
// config writes (and so, by TestSameEndState, the cloud-config too), and
// unit files go where both formats put them.
func TestInstallSameEndState(t *testing.T) {
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			in, err := n.Install()
			if err != nil {
				t.Fatal(err)
			}
			ign, err := Ignition(n)
			if err != nil {
				t.Fatal(err)
			}
			got, want := installState(in), ignitionState(t, ign)
			if got.Hostname != want.Hostname || !slices.Equal(got.Keys, want.Keys) {
				t.Errorf("hostname, keys: Install %q %q, Ignition %q %q", got.Hostname, got.Keys, want.Hostname, want.Keys)
			}
			if g, w := slices.Sorted(maps.Keys(got.Files)), slices.Sorted(maps.Keys(want.Files)); !slices.Equal(g, w) {
				t.Errorf("file paths: Install %q, Ignition %q", g, w)
			}
			for p, f := range want.Files {
				if g := got.Files[p]; g != f {
					t.Errorf("%s: Install %+v, Ignition %+v", p, g, f)
				}
			}
			if !reflect.DeepEqual(got.Units, want.Units) {
				t.Errorf("units: Install %+v, Ignition %+v", got.Units, want.Units)
			}
			if in.UnitDir != unitDir || in.Units[0].Name != clusterdUnit {
				t.Errorf("unit dir %q, first unit %q", in.UnitDir, in.Units[0].Name)
			}
			for _, f := range in.Files {
				if f.Mode == 0 {
					t.Errorf("%s: mode left 0", f.Path)
				}
			}
			if in.Name != n.clusterdName() {
				t.Errorf("name %q, want %q", in.Name, n.clusterdName())
			}
		})
	}
}

// TestInstallService: Install's Service is what clusterd.service says, line
// for line, so running clusterd without systemd runs the same command.
func TestInstallService(t *testing.T) {
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			in, err := n.Install()
			if err != nil {
				t.Fatal(err)
			}
			unit := in.Units[0].Content
			// Undo the line continuations of ExecStart.
			unit = strings.ReplaceAll(unit, " \\\n  ", " ")
			values := map[string][]string{}
			for line := range strings.SplitSeq(unit, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					values[k] = append(values[k], v)
				}
			}
			s := in.Clusterd
			var pre []string
			for _, p := range s.ExecStartPre {
				pre = append(pre, execLine(p))
			}
			checks := []struct {
				key  string
				want []string
			}{
				{"EnvironmentFile", s.EnvironmentFiles},
				{"ExecStartPre", pre},
				{"ExecStart", []string{execLine(s.ExecStart)}},
				{"RestartSec", []string{s.RestartSec.String()}},
				{"LimitNOFILE", []string{fmt.Sprint(s.LimitNOFILE)}},
			}
			for _, c := range checks {
				if !slices.Equal(values[c.key], c.want) {
					t.Errorf("%s: unit has %q, Install %q", c.key, values[c.key], c.want)
				}
			}
			if s.ExecStart[0] != in.BinaryPath {
				t.Errorf("ExecStart runs %q, not the binary at %q", s.ExecStart[0], in.BinaryPath)
			}
			if detect := !n.Clusterd.IP.IsValid(); detect != (len(s.ExecStartPre) == 1) || detect != slices.Contains(s.ExecStart, "--ip=${"+ipEnvVariable+"}") {
				t.Errorf("IP detection: node IP %v, ExecStartPre %q, ExecStart %q", n.Clusterd.IP, s.ExecStartPre, s.ExecStart)
			}
		})
	}
}

// TestInstallInvalid: Install refuses what the renderers refuse.
func TestInstallInvalid(t *testing.T) {
	n := fixtures(t)["init"]
	n.Clusterd.Mode = "leader"
	if _, err := n.Install(); err == nil || !strings.Contains(err.Error(), "Clusterd.Mode") {
		t.Fatalf("Install of an invalid node: %v", err)
	}
}
