package config

import (
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/backup"
)

const backupBase = "cluster \"prod\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"

func TestBackupBlock(t *testing.T) {
	cases := []struct {
		body string
		want backup.Settings
	}{
		{`destination = "dir:/var/backups/corral"`, backup.Settings{Cluster: "prod", Schedule: "1h0m0s", Keep: 24, Destination: "dir:/var/backups/corral"}},
		{"schedule = \"30m\"\n  keep = 3\n  destination = \"s3://my-bucket/corral\"\n  region = \"eu-west-1\"",
			backup.Settings{Cluster: "prod", Schedule: "30m0s", Keep: 3, Destination: "s3://my-bucket/corral", Region: "eu-west-1"}},
	}
	for _, tc := range cases {
		cfg, diags := Parse([]byte(backupBase+"backup {\n  "+tc.body+"\n}\n"), "b.hcl", Inputs{})
		if diags.HasErrors() {
			t.Fatalf("%q: %v", tc.body, diags.Error())
		}
		if got := cfg.Backup.Settings(cfg.Cluster.Name); got != tc.want {
			t.Errorf("%q: settings %+v, want %+v", tc.body, got, tc.want)
		}
	}
	if cfg, _ := Parse([]byte(backupBase), "b.hcl", Inputs{}); cfg.Backup != nil {
		t.Error("a file without a backup block has scheduled snapshots")
	}
}

// TestBackupErrors: each mistake is reported at its file:line:column,
// naming the field and what would be right.
func TestBackupErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{`destination = "ftp://x"`, `b.hcl:5,17: Invalid destination; destination "ftp://x": want "dir:<absolute directory>"`},
		{`destination = "dir:relative"`, `b.hcl:5,17: Invalid destination; destination "dir:relative": give an absolute directory`},
		{"schedule = \"often\"\n  destination = \"dir:/b\"", `b.hcl:5,14: Invalid schedule; schedule is how often to take a snapshot, a duration such as "1h" or "30m"; got "often".`},
		{"schedule = \"10s\"\n  destination = \"dir:/b\"", `b.hcl:5,14: Invalid schedule; schedule must be at least 1m0s`},
		{"keep = 0\n  destination = \"dir:/b\"", `b.hcl:5,10: Invalid keep; keep is how many snapshots to keep, between 1 and 10000; got 0.`},
		{`keep = 3`, `Missing required argument; The argument "destination" is required`},
		{`destination = "s3"`, `b.hcl:4,1: Invalid destination; destination "s3" is the cluster's own bucket, which only provider "aws" creates; this file's provider is "local"`},
	}
	for _, tc := range cases {
		_, diags := Parse([]byte(backupBase+"backup {\n  "+tc.body+"\n}\n"), "b.hcl", Inputs{})
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%q: got %v\nwant %s", tc.body, diags.Error(), tc.want)
		}
	}
	_, diags := Parse([]byte(backupBase+"backup { destination = \"dir:/a\" }\nbackup { destination = \"dir:/b\" }\n"), "b.hcl", Inputs{})
	if !strings.Contains(diags.Error(), "b.hcl:5,1: Duplicate backup block; A backup block is already defined at b.hcl:4,1; remove one of them.") {
		t.Errorf("duplicate: %v", diags.Error())
	}
}
