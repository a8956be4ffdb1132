package config

import (
	"strings"
	"testing"
)

// awsVPCFile is a file with a network block with backend "aws-vpc" on
// line 3 and provider typ with the given attribute lines.
func awsVPCFile(typ string, attrs ...string) []byte {
	ls := []string{
		`cluster "demo" {}`,
		`network {`,
		`  backend = "aws-vpc"`,
		`  cidr    = "10.244.0.0/16"`,
		`}`,
		`node_group "core" { desired_capacity = 3 }`,
		`provider "` + typ + `" {`,
	}
	return lines(append(append(ls, attrs...), `}`)...)
}

func TestNetworkBackendAWSVPC(t *testing.T) {
	cfg := mustParse(t, awsVPCFile("aws", `region = "us-west-2"`, `overlay = "aws-vpc"`))
	if cfg.Network.Backend != "aws-vpc" {
		t.Errorf("backend %q", cfg.Network.Backend)
	}
	for _, tc := range []struct {
		name, typ string
		attrs     []string
		want      string
	}{
		{"provider local", "local", nil, `backend "aws-vpc" routes the overlay through an AWS VPC route table, so it needs provider "aws"; this file's provider is "local"`},
		{"aws without the overlay", "aws", []string{`region = "us-west-2"`}, `backend "aws-vpc" needs overlay = "aws-vpc" in provider "aws"`},
	} {
		_, diags := Parse(awsVPCFile(tc.typ, tc.attrs...), "file.hcl", Inputs{})
		if !diags.HasErrors() {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		d := diags.Diags[0]
		if len(diags.Diags) != 1 || d.Summary != "Unsupported backend" || !strings.Contains(d.Detail, tc.want) || d.Subject == nil || d.Subject.Start.Line != 3 {
			t.Errorf("%s: %s", tc.name, diags.Error())
		}
	}
}
