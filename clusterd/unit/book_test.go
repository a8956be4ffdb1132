package unit

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The units in testdata are the ones "CoreOS in Action" has its readers
// write. Each is read from disk, submitted under its template or plain
// name, instantiated, and read for scheduling as fleet would.
func TestBookUnits(t *testing.T) {
	machine := Machine{ID: "b0b00cea0123456789abcdef01234567", Hostname: "database-1", BootID: "0f0e0d0c0b0a09080706050403020100"}
	tests := []struct {
		file     string
		instance string // what is started: an instance of a template, or the file's own name
		fleet    Fleet  // what the scheduler reads for the instance
		values   map[string][]string
	}{
		{
			file:     "hello@.service",
			instance: "hello@1.service",
			fleet:    Fleet{Conflicts: []string{"hello@*"}},
			values: map[string][]string{
				"Unit/Description":     {"Hello World Service"},
				"Service/ExecStartPre": {"-/usr/bin/docker kill hello-1", "-/usr/bin/docker rm -f hello-1", "/usr/bin/docker pull mattbailey/helloworld:latest"},
				"Service/ExecStart":    {"/usr/bin/docker run --name hello-1      -p 3000:3000 mattbailey/helloworld:latest"},
				"Service/ExecStop":     {"/usr/bin/docker stop hello-1"},
			},
		},
		{
			file:     "hello-sidekick@.service",
			instance: "hello-sidekick@1.service",
			fleet:    Fleet{MachineOf: []string{"hello@1.service"}},
			values: map[string][]string{
				"Unit/Description":  {"Register Hello World 1"},
				"Unit/BindsTo":      {"hello@1.service"},
				"Unit/After":        {"hello@1.service"},
				"Service/ExecStart": {`/bin/bash -c 'while true;  do  [ "` + "`etcdctl get /services/hello/${COREOS_PUBLIC_IPV4}`" + `"  != "server ${COREOS_PUBLIC_IPV4}:3000;" ] &&  etcdctl set /services/changed/hello 1;  etcdctl set /services/hello/${COREOS_PUBLIC_IPV4}  \'server ${COREOS_PUBLIC_IPV4}:3000;\'  --ttl 60;sleep 45;done'`},
				"Service/ExecStop":  {"/usr/bin/etcdctl rm /services/hello/hello@1"},
			},
		},
		{
			file:     "couchbase-monitor.service",
			instance: "couchbase-monitor.service",
			fleet:    Fleet{Global: true, MachineMetadata: map[string][]string{"role": {"database"}}},
			values: map[string][]string{
				"Unit/Description":  {"Couchbase node monitor on database-1"},
				"Service/ExecStart": {"/usr/bin/docker run --rm --name couchbase-monitor --net=host couchbase/monitor:latest"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			f, err := Parse(tt.file, src)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			// Submitting: a template is checked as a template, a plain unit
			// as what it is.
			file, err := ParseName(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if file.IsTemplate() {
				if err := ValidateTemplate(tt.file, f, file); err != nil {
					t.Errorf("ValidateTemplate: %v", err)
				}
				if err := Validate(tt.file, f, file); err == nil || !strings.Contains(err.Error(), "is a template; start an instance such as") {
					t.Errorf("starting the template itself: got %v", err)
				}
			}

			// Starting an instance: the scheduler's view, then the agent's.
			n, err := ParseName(tt.instance)
			if err != nil {
				t.Fatal(err)
			}
			if n.Template() != file {
				t.Fatalf("%s is not started from %s", n, file)
			}
			if err := Validate(tt.file, f, n); err != nil {
				t.Errorf("Validate(%s): %v", n, err)
			}
			fl, err := Instantiate(f, n, Machine{}).Fleet()
			if err != nil {
				t.Fatalf("Fleet: %v", err)
			}
			if !reflect.DeepEqual(fl, tt.fleet) {
				t.Errorf("Fleet:\ngot  %#v\nwant %#v", fl, tt.fleet)
			}
			inst := Instantiate(f, n, machine)
			for key, want := range tt.values {
				section, option, _ := strings.Cut(key, "/")
				if got := inst.Values(section, option); !reflect.DeepEqual(got, want) {
					t.Errorf("%s:\ngot  %q\nwant %q", key, got, want)
				}
			}
			if strings.Contains(inst.String(), "%i") || strings.Contains(inst.String(), "%H") || strings.Contains(inst.String(), "%p") {
				t.Errorf("specifiers left in the instance:\n%s", inst)
			}
			// Comments and layout are not part of the unit.
			if again := mustParse(t, string(f.Bytes())); again.Hash() != f.Hash() {
				t.Error("canonical form hashes differently")
			}
		})
	}
}

// The hello@ conflicts keep instances apart, and leave the sidekick alone.
func TestBookConflicts(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "hello@.service"))
	if err != nil {
		t.Fatal(err)
	}
	fl, err := Instantiate(mustParse(t, string(src)), Name{Prefix: "hello", Instance: "1", Templated: true}, Machine{}).Fleet()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"hello@2.service":          true,
		"hello@1.service":          true, // itself: the scheduler skips it
		"hello-sidekick@2.service": false,
		"hello.service":            false,
	} {
		got := false
		for _, g := range fl.Conflicts {
			got = got || Match(g, name)
		}
		if got != want {
			t.Errorf("%s conflicts with hello@1.service: %v, want %v", name, got, want)
		}
	}
}
