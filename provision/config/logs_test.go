package config

import (
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/logship"
)

const logsBase = "cluster \"prod\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"

func TestLogsBlock(t *testing.T) {
	cases := []struct {
		body string
		want logship.Settings
	}{
		{`destination = "cloudwatch"`, logship.Settings{Destination: "cloudwatch:/corral/prod", QueueLines: 10000, QueueBytes: 4 << 20}},
		{"destination = \"cloudwatch:/my/group\"\n  region = \"eu-west-1\"", logship.Settings{Destination: "cloudwatch:/my/group", Region: "eu-west-1", QueueLines: 10000, QueueBytes: 4 << 20}},
		{"destination = \"file:/var/log/corral\"\n  queue_lines = 500\n  queue_bytes = 1024 * 1024", logship.Settings{Destination: "file:/var/log/corral", QueueLines: 500, QueueBytes: 1 << 20}},
	}
	for _, tc := range cases {
		cfg, diags := Parse([]byte(logsBase+"logs {\n  "+tc.body+"\n}\n"), "l.hcl", Inputs{})
		if diags.HasErrors() {
			t.Fatalf("%q: %v", tc.body, diags.Error())
		}
		if got := cfg.Logs.Settings(cfg.Cluster.Name); got != tc.want {
			t.Errorf("%q: settings %+v, want %+v", tc.body, got, tc.want)
		}
	}
	if cfg, _ := Parse([]byte(logsBase), "l.hcl", Inputs{}); cfg.Logs != nil {
		t.Error("a file without a logs block ships logs")
	}
}

func TestLogsErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{`destination = "syslog"`, `l.hcl:6,17: Invalid destination; destination "syslog": want "cloudwatch"`},
		{`destination = "file:var/log"`, `l.hcl:6,17: Invalid destination; file destination "var/log": give an absolute directory`},
		{`destination = "cloudwatch:no spaces"`, `CloudWatch Logs group name`},
		{"destination = \"cloudwatch\"\n  queue_lines = 5", `l.hcl:7,17: Invalid queue_lines; queue_lines must be between 100 and 1000000, got 5.`},
		{"destination = \"cloudwatch\"\n  queue_bytes = \"lots\"", `Inappropriate value for attribute "queue_bytes"`},
		{`region = "us-east-1"`, `The argument "destination" is required`},
		{"destination = \"cloudwatch\"\n  retention = 7", `An argument named "retention" is not expected here`},
	}
	for _, tc := range cases {
		_, diags := Parse([]byte(logsBase+"\nlogs {\n  "+tc.body+"\n}\n"), "l.hcl", Inputs{})
		if !diags.HasErrors() || len(diags.Diags) != 1 || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%q: want one error with %q, got %v", tc.body, tc.want, diags.Error())
		}
	}
	_, diags := Parse([]byte(logsBase+"logs { destination = \"cloudwatch\" }\nlogs { destination = \"file:/x\" }\n"), "l.hcl", Inputs{})
	if !strings.Contains(diags.Error(), "Duplicate logs block") {
		t.Errorf("two logs blocks: %v", diags.Error())
	}
}
