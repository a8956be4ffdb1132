package config

import (
	"strings"
	"testing"
)

const hookBase = "cluster \"prod\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"

func TestDeployHookBlock(t *testing.T) {
	cases := []struct {
		src  string
		in   Inputs
		want DeployHook
	}{
		{"deploy_hook {}\n", Inputs{}, DeployHook{Key: "/coreos.com/deploy", Port: 9443}},
		{"deploy_hook {\n  key = \"/apps/web/deploy\"\n  port = 8443\n  secret = \"0123456789abcdef\"\n}\n", Inputs{},
			DeployHook{Key: "/apps/web/deploy", Port: 8443, Secret: "0123456789abcdef"}},
		// The secret from a variable, set here as CORRAL_VAR_deploy_secret would.
		{"variable \"deploy_secret\" {\n  type = string\n  sensitive = true\n}\ndeploy_hook { secret = var.deploy_secret }\n",
			Inputs{Env: []string{"CORRAL_VAR_deploy_secret=a-secret-from-the-environment"}},
			DeployHook{Key: "/coreos.com/deploy", Port: 9443, Secret: "a-secret-from-the-environment"}},
		// Left at "": provision generates one.
		{"variable \"deploy_secret\" { default = \"\" }\ndeploy_hook { secret = var.deploy_secret }\n", Inputs{},
			DeployHook{Key: "/coreos.com/deploy", Port: 9443}},
	}
	for _, tc := range cases {
		cfg, diags := Parse([]byte(hookBase+tc.src), "h.hcl", tc.in)
		if diags.HasErrors() {
			t.Fatalf("%q: %v", tc.src, diags.Error())
		}
		got := *cfg.DeployHook
		got.DeclRange = tc.want.DeclRange
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.src, got, tc.want)
		}
	}
	if cfg, _ := Parse([]byte(hookBase), "h.hcl", Inputs{}); cfg.DeployHook != nil {
		t.Error("a file without a deploy_hook block has a deploy hook")
	}
}

func TestDeployHookErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{`key = "coreos.com/deploy"`, `h.hcl:5,9: Invalid key; key "coreos.com/deploy": want an absolute key`},
		{`key = "/corral/units/desired/x"`, `h.hcl:5,9: Invalid key; key "/corral/units/desired/x": keys under /corral/ are the cluster's own`},
		{`port = 0`, `h.hcl:5,10: Invalid port; port 0: want 1 to 65535.`},
		{`secret = "hunter2"`, `h.hcl:5,12: Invalid secret; secret: 7 characters is too short`},
		{`port = "https"`, `Inappropriate value for attribute "port"`},
		{`path = "/deploy"`, `An argument named "path" is not expected here`},
	}
	for _, tc := range cases {
		_, diags := Parse([]byte(hookBase+"deploy_hook {\n  "+tc.body+"\n}\n"), "h.hcl", Inputs{})
		if !diags.HasErrors() || len(diags.Diags) != 1 || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%q: want one error with %q, got %v", tc.body, tc.want, diags.Error())
		}
	}
	_, diags := Parse([]byte(hookBase+"deploy_hook {}\ndeploy_hook {}\n"), "h.hcl", Inputs{})
	if !strings.Contains(diags.Error(), "Duplicate deploy_hook block") {
		t.Errorf("two deploy_hook blocks: %v", diags.Error())
	}
}
