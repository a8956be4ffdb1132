package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func nodes(group string, n int, boot Fingerprint) []Existing {
	var out []Existing
	for i := 1; i <= n; i++ {
		out = append(out, Existing{Name: fmt.Sprintf("%s-%d", group, i), Group: group, Index: i,
			Created: t0.Add(time.Duration(i) * time.Second), Boot: boot})
	}
	return out
}

func running(names ...string) map[string]Live {
	m := map[string]Live{}
	for _, n := range names {
		m[n] = Live{Running: true}
	}
	return m
}

// summary is a change list as "action name" words, for comparing.
func summary(cs []Change) string {
	var w []string
	for _, c := range cs {
		s := string(c.Action) + " " + c.Name
		if c.Replacement != "" {
			s += "→" + c.Replacement
		}
		w = append(w, s)
	}
	return strings.Join(w, ", ")
}

func TestNodeChanges(t *testing.T) {
	v1 := Fingerprint{"metadata": "a", "file /etc/motd": "m1"}
	v2 := Fingerprint{"metadata": "a", "file /etc/motd": "m2"}
	core3 := nodes("core", 3, v1)
	core5 := nodes("core", 5, v1)
	cases := []struct {
		name string
		in   Nodes
		want string
	}{
		{"first up", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v1}}},
			"create core-1, create core-2, create core-3"},
		{"no change", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v1}}, State: core3, Live: running("core-1", "core-2", "core-3")},
			""},
		{"3 to 5 creates exactly two", Nodes{Groups: []Group{{Name: "core", Capacity: 5, Boot: v1}}, State: core3, Live: running("core-1", "core-2", "core-3")},
			"create core-4, create core-5"},
		{"5 to 3 deletes the newest first", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v1}}, State: core5},
			"delete core-5, delete core-4"},
		{"boot change replaces one at a time, oldest first", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v2}}, State: core3},
			"replace core-1→core-4, replace core-2→core-5, replace core-3→core-6"},
		{"boot change on an in-place provider updates", Nodes{Groups: []Group{{Name: "core", Capacity: 2, Boot: v2}}, State: core3[:2], InPlace: true},
			"update core-1, update core-2"},
		{"a node recorded without a fingerprint is not replaced", Nodes{Groups: []Group{{Name: "core", Capacity: 1, Boot: v2}}, State: nodes("core", 1, nil)},
			""},
		{"a node not running is started again", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v1}}, State: core3, Live: running("core-1", "core-3")},
			"update core-2"},
		{"a live node the state lacks is deleted", Nodes{Groups: []Group{{Name: "core", Capacity: 1, Boot: v1}}, State: core3[:1], Live: running("core-1", "core-7")},
			"delete core-7"},
		{"a dropped group goes whole, newest first", Nodes{Groups: []Group{{Name: "core", Capacity: 1, Boot: v1}}, State: append(core3[:1:1], nodes("db", 2, v1)...)},
			"delete db-2, delete db-1"},
		{"a freed name is used again", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v1}}, State: []Existing{core5[0], core5[2]}},
			"create core-2"},
		{"named machines first, then numbered", Nodes{Groups: []Group{{Name: "metal", Capacity: 4, Boot: v1, Names: []string{"node1", "node2"}}},
			State: []Existing{{Name: "node2", Group: "metal", Index: 2, Created: t0, Boot: v1}}},
			"create node1, create metal-1, create metal-2"},
		{"scale-out and a boot change together", Nodes{Groups: []Group{{Name: "core", Capacity: 4, Boot: v2}}, State: core3[:2]},
			"create core-3, create core-4, replace core-1→core-5, replace core-2→core-6"},
		{"a replacement stopped half-way resumes: the outdated node goes", Nodes{Groups: []Group{{Name: "core", Capacity: 3, Boot: v2}},
			State: append(slices.Clone(core3), Existing{Name: "core-4", Group: "core", Index: 4, Created: t0.Add(time.Hour), Boot: v2})},
			"delete core-1, replace core-2→core-5, replace core-3→core-6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := summary(NodeChanges(tc.in)); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestReplaceNamesFields(t *testing.T) {
	cs := NodeChanges(Nodes{
		Groups: []Group{{Name: "core", Capacity: 1, Boot: Fingerprint{"metadata": "b", "unit x.service": "u"}}},
		State:  nodes("core", 1, Fingerprint{"metadata": "a", "file /etc/motd": "m"}),
	})
	if len(cs) != 1 || cs[0].Reason != "boot config changed: file /etc/motd, metadata, unit x.service" {
		t.Fatalf("got %+v", cs)
	}
}

func TestServiceChanges(t *testing.T) {
	want := []Unit{{"a@1.service", "a@.service", "h1"}, {"a@2.service", "a@.service", "h2"}, {"b.service", "b.service", "h3"}}
	have := []Unit{{Name: "a@1.service", Hash: "h1"}, {Name: "a@2.service", Hash: "old"}, {Name: "c@1.service"}, {Name: "c@2.service"}}
	got := summary(ServiceChanges(want, have))
	if got != "delete c@2.service, delete c@1.service, create b.service, replace a@2.service" {
		t.Fatalf("got %q", got)
	}
}

func TestWrite(t *testing.T) {
	p := &Plan{Cluster: "demo", Provider: "local"}
	if got := p.String(); got != "No changes: cluster \"demo\" (local provider) matches its file.\n" {
		t.Fatalf("empty plan: %q", got)
	}
	var b bytes.Buffer
	if err := p.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Changes []Change
		Summary map[string]int
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Changes == nil || back.Summary["create"] != 0 {
		t.Fatalf("empty plan as JSON: %s (%v)", b.String(), err)
	}

	p.Changes = NodeChanges(Nodes{Groups: []Group{{Name: "core", Capacity: 1, Boot: Fingerprint{"a": "2"}}}, State: nodes("core", 1, Fingerprint{"a": "1"})})
	b.Reset()
	p.WriteText(&b, true)
	if !strings.Contains(b.String(), "\x1b[35m-/+\x1b[0m") {
		t.Errorf("a replace is not magenta on a terminal:\n%q", b.String())
	}
	if plain := p.String(); strings.Contains(plain, "\x1b") || !strings.Contains(plain, "1 to replace") {
		t.Errorf("plain text:\n%s", plain)
	}
}
