package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriteTo(t *testing.T) {
	src := lines(
		`cluster "c" {}`,
		`provider "local" {}`,
		`node_group "core" {`,
		`  desired_capacity = -1`,
		`}`,
		`node_group "db" {`,
		`  desired_capacity = 1`,
		`  metadata = { role = "" }`,
		`}`,
	)
	_, diags := Parse(src, "file.hcl", Inputs{})
	var buf bytes.Buffer
	n, err := diags.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
	}
	out := buf.String()
	for _, want := range []string{
		"file.hcl:4,22: Error: Invalid desired_capacity",
		"   4:   desired_capacity = -1",
		"desired_capacity must be 0 or more, got -1.",
		"file.hcl:8,23: Error: Invalid metadata",
		`   8:   metadata = { role = "" }`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not contain %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("output has color escapes:\n%q", out)
	}
}

func TestError(t *testing.T) {
	_, diags := Parse(lines(`cluster "c" { etcd_members = 2 }`, `provider "x" {}`), "file.hcl", Inputs{})
	want := strings.Join([]string{
		"file.hcl:1,30: Invalid etcd_members; etcd_members must be 1, 3, 5 or 7, got 2.",
		`file.hcl:2,10: Unsupported provider "x"; supported: aws, local, pxe, ssh, vagrant`,
		`file.hcl:1,1: Missing node_group block; A cluster needs at least one node_group; add node_group "core" { desired_capacity = 3 }.`,
	}, "\n")
	if got := diags.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestNilDiagnostics(t *testing.T) {
	var d *Diagnostics
	if d.HasErrors() {
		t.Error("nil HasErrors() = true")
	}
	if d.Error() != "" {
		t.Errorf("nil Error() = %q", d.Error())
	}
	if n, err := d.WriteTo(&bytes.Buffer{}); n != 0 || err != nil {
		t.Errorf("nil WriteTo() = %d, %v", n, err)
	}
}
