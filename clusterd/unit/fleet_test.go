package unit

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const testMachineID = "2e3ebbb2f1c94a7e9b1d3c5a7e9b1d3c"

func TestFleet(t *testing.T) {
	tests := []struct {
		name string
		src  string // the [X-Fleet] section's body
		want Fleet
	}{
		{"none", "", Fleet{}},
		{"conflicts", "Conflicts=hello@*", Fleet{Conflicts: []string{"hello@*"}}},
		{
			"conflicts on several lines and space-separated",
			"Conflicts=a@* b@*\nConflicts=c*\nConflicts=\"d@*\"  e@*",
			Fleet{Conflicts: []string{"a@*", "b@*", "c*", "d@*", "e@*"}},
		},
		{"conflicts repeated once", "Conflicts=a@*\nConflicts=a@* a@*", Fleet{Conflicts: []string{"a@*"}}},
		{"machine of", "MachineOf=hello@1.service", Fleet{MachineOf: []string{"hello@1.service"}}},
		{"machine of without type", "MachineOf=hello@1", Fleet{MachineOf: []string{"hello@1.service"}}},
		{"machine of a socket", "MachineOf=foo.socket", Fleet{MachineOf: []string{"foo.socket"}}},
		{"machine of with a specifier kept", "MachineOf=hello@%i.service", Fleet{MachineOf: []string{"hello@%i.service"}}},
		{"machine id", "MachineID=" + testMachineID, Fleet{MachineID: testMachineID}},
		{"machine id lower-cased", "MachineID=" + strings.ToUpper(testMachineID), Fleet{MachineID: testMachineID}},
		{"machine id repeated", "MachineID=" + testMachineID + "\nMachineID=" + testMachineID, Fleet{MachineID: testMachineID}},
		{"metadata", "MachineMetadata=role=database", Fleet{MachineMetadata: map[string][]string{"role": {"database"}}}},
		{
			"metadata: several keys, same key twice is OR",
			"MachineMetadata=\"region=us-east-1\" \"diskType=SSD\"\nMachineMetadata=region=us-west-1\nMachineMetadata=region=us-east-1",
			Fleet{MachineMetadata: map[string][]string{"region": {"us-east-1", "us-west-1"}, "diskType": {"SSD"}}},
		},
		{"metadata with a quoted blank", `MachineMetadata="location=new york"`, Fleet{MachineMetadata: map[string][]string{"location": {"new york"}}}},
		{"global", "Global=true", Fleet{Global: true}},
		{"global false", "Global=false\nMachineOf=a.service", Fleet{MachineOf: []string{"a.service"}}},
		{"global with systemd's booleans", "Global=yes", Fleet{Global: true}},
		{"global last wins", "Global=true\nGlobal=off", Fleet{}},
		{
			"global with metadata and conflicts",
			"Global=true\nMachineMetadata=role=database\nConflicts=other*",
			Fleet{Global: true, Conflicts: []string{"other*"}, MachineMetadata: map[string][]string{"role": {"database"}}},
		},
		{"replaces", "Replaces=old@1.service old@2", Fleet{Replaces: []string{"old@1.service", "old@2.service"}}},
		{
			"pre-0.8 names",
			"X-Conflicts=a*\nX-ConditionMachineOf=b.service\nX-ConditionMachineMetadata=k=v\nX-ConditionMachineID=" + testMachineID,
			Fleet{Conflicts: []string{"a*"}, MachineOf: []string{"b.service"}, MachineMetadata: map[string][]string{"k": {"v"}}, MachineID: testMachineID},
		},
		{"old and new names together", "X-Conflicts=a*\nConflicts=b*", Fleet{Conflicts: []string{"a*", "b*"}}},
		{"empty value asks for nothing", "Conflicts=\nMachineOf=\"\"", Fleet{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, "[Service]\nExecStart=/bin/true\nConflicts=not-fleet's\n[X-Fleet]\n"+tt.src+"\n")
			got, err := f.Fleet()
			if err != nil {
				t.Fatalf("Fleet: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestFleetSeveralSections(t *testing.T) {
	f := mustParse(t, "[X-Fleet]\nConflicts=a*\n[Service]\nExecStart=x\n[X-Fleet]\nConflicts=b*\n")
	got, err := f.Fleet()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a*", "b*"}; !reflect.DeepEqual(got.Conflicts, want) {
		t.Errorf("Conflicts = %q, want %q", got.Conflicts, want)
	}
}

func TestFleetErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string // the [X-Fleet] section's body, which starts on line 2
		want []string
	}{
		{"unknown key", "Conflict=a*", []string{"line 2: unknown [X-Fleet] option Conflict; fleet knows Conflicts, MachineOf, MachineID, MachineMetadata, Global and Replaces"}},
		{"wrong case", "machineof=a.service", []string{"line 2: unknown [X-Fleet] option machineof; did you mean MachineOf?"}},
		{"Weight was never valid", "Weight=2", []string{"line 2: unknown [X-Fleet] option Weight; fleet knows Conflicts, MachineOf, MachineID, MachineMetadata, Global and Replaces"}},
		{"boot id", "X-ConditionMachineBootID=abc", []string{"line 2: X-ConditionMachineBootID is no longer supported; pin the unit with MachineID=<machine id>"}},
		{"global with MachineOf", "Global=true\nMachineOf=a.service", []string{"line 3: Global=true can't be combined with MachineOf; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)"}},
		{"global with MachineID", "MachineID=" + testMachineID + "\nGlobal=true", []string{"line 2: Global=true can't be combined with MachineID; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)"}},
		{"global with Replaces, two words one complaint", "Global=1\nReplaces=a b", []string{"line 3: Global=true can't be combined with Replaces; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)"}},
		{"global with the old MachineOf", "Global=true\nX-ConditionMachineOf=a.service", []string{"line 3: Global=true can't be combined with MachineOf; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)"}},
		{"global not a bool", "Global=maybe", []string{"line 2: Global=maybe: expected true or false"}},
		{"global empty", "Global=", []string{"line 2: Global= takes one value, got 0"}},
		{"global twice on a line", "Global=true false", []string{"line 2: Global= takes one value, got 2"}},
		{"metadata without '='", "MachineMetadata=database", []string{`line 2: MachineMetadata "database": expected key=value, such as role=database`}},
		{"metadata empty value", "MachineMetadata=role=", []string{`line 2: MachineMetadata "role=": expected key=value, such as role=database`}},
		{"metadata empty key", "MachineMetadata==db", []string{`line 2: MachineMetadata "=db": expected key=value, such as role=database`}},
		{"metadata two '='", "MachineMetadata=a=b=c", []string{`line 2: MachineMetadata "a=b=c": expected key=value, such as role=database`}},
		{"metadata unterminated quote", `MachineMetadata="role=db`, []string{`line 2: MachineMetadata="role=db: unterminated quote`}},
		{"machine id prefix", "MachineID=2e3ebbb2", []string{"line 2: MachineID 2e3ebbb2 has 8 digits; use the full 32-digit machine id (clusterctl list-machines -l), not a prefix"}},
		{"machine id not hex", "MachineID=core-1", []string{`line 2: MachineID "core-1": a machine id is 32 hexadecimal digits`}},
		{"machine id as a UUID", "MachineID=2e3ebbb2-f1c9-4a7e-9b1d-3c5a7e9b1d3c", []string{"line 2: MachineID 2e3ebbb2-f1c9-4a7e-9b1d-3c5a7e9b1d3c: write the machine id without dashes, as in /etc/machine-id"}},
		{"machine id twice, different", "MachineID=" + testMachineID + "\nMachineID=" + strings.Repeat("a", 32), []string{"line 3: MachineID " + strings.Repeat("a", 32) + " contradicts MachineID " + testMachineID + " on line 2; a unit can be pinned to one machine"}},
		{"machine of a bad name", "MachineOf=a b/c", []string{`line 2: MachineOf: invalid unit name "b/c": '/' is not allowed; use letters, digits and ":_.-" (systemd-escape writes anything else)`}},
		{"machine of a template", "MachineOf=hello@.service", []string{"line 2: MachineOf: hello@.service is a template, which never runs; name an instance, such as hello@%i.service"}},
		{"replaces a bad name", "Replaces=x.target", []string{`line 2: Replaces: invalid unit name "x.target": .target units can't be scheduled; use service, socket, timer, path, mount, automount or device`}},
		{"bad glob", "Conflicts=hello@[", []string{`line 2: Conflicts glob "hello@[" is malformed: syntax error in pattern`}},
		{
			"every problem, in line order",
			"Global=true\nMachineOf=a.service\nBogus=1\nMachineMetadata=x",
			[]string{
				"line 3: Global=true can't be combined with MachineOf; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)",
				"line 4: unknown [X-Fleet] option Bogus; fleet knows Conflicts, MachineOf, MachineID, MachineMetadata, Global and Replaces",
				`line 5: MachineMetadata "x": expected key=value, such as role=database`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, "[X-Fleet]\n"+tt.src+"\n")
			_, err := f.Fleet()
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("error:\ngot  %q\nwant %q", got, tt.want)
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Line == 0 || ue.File != "" {
				t.Errorf("error %#v is not a file-less *Error with a line", err)
			}
		})
	}
}

func TestSplitValues(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"", nil, true},
		{"a", []string{"a"}, true},
		{"a  b\tc", []string{"a", "b", "c"}, true},
		{`"a b" c`, []string{"a b", "c"}, true},
		{`"region=us-east-1" "diskType=SSD"`, []string{"region=us-east-1", "diskType=SSD"}, true},
		{`k="a b"`, []string{"k=a b"}, true},
		{`""`, []string{""}, true},
		{`"a`, []string{"a"}, false},
	}
	for _, tt := range tests {
		got, ok := splitValues(tt.in)
		if !reflect.DeepEqual(got, tt.want) || ok != tt.ok {
			t.Errorf("splitValues(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
