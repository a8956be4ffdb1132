package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// eval evaluates one expression with the functions of a file in dir.
func eval(t *testing.T, dir, src string) (cty.Value, hcl.Diagnostics) {
	t.Helper()
	expr, diags := hclsyntax.ParseExpression([]byte(src), "expr.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", src, diags.Error())
	}
	return expr.Value(&hcl.EvalContext{Functions: functions(dir)})
}

func TestFunctions(t *testing.T) {
	dir := t.TempDir()
	home := t.TempDir()
	t.Setenv("HOME", home)
	for name, content := range map[string]string{
		filepath.Join(dir, "motd.txt"):          "hello\n",
		filepath.Join(dir, "tmpl", "unit.tmpl"): "%{ for p in ports }listen ${p}\n%{ endfor }name=${upper(name)}\n",
		filepath.Join(dir, "list.tmpl"):         "${items}",
		filepath.Join(home, "id.pub"):           "ssh-ed25519 AAAA",
	} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	str := cty.StringVal
	num := cty.NumberIntVal
	tests := []struct {
		expr string
		want cty.Value
	}{
		// go-cty's standard library, under Terraform's names.
		{`format("%s-%03d", "web", 7)`, str("web-007")},
		{`formatlist("%s.local", ["a", "b"])`, cty.ListVal([]cty.Value{str("a.local"), str("b.local")})},
		{`join(",", ["a", "b"], ["c"])`, str("a,b,c")},
		{`split(",", "a,b")`, cty.ListVal([]cty.Value{str("a"), str("b")})},
		{`lookup({ a = 1 }, "b", 2)`, num(2)},
		{`merge({ a = 1, b = 2 }, { b = 3 })`, cty.ObjectVal(map[string]cty.Value{"a": num(1), "b": num(3)})},
		{`concat(["a"], ["b"])`, cty.TupleVal([]cty.Value{str("a"), str("b")})},
		{`contains(["a", "b"], "b")`, cty.True},
		{`distinct(["a", "b", "a"])`, cty.ListVal([]cty.Value{str("a"), str("b")})},
		{`element(["a", "b"], 3)`, str("b")},
		{`flatten([["a"], ["b", ["c"]]])`, cty.TupleVal([]cty.Value{str("a"), str("b"), str("c")})},
		{`keys({ b = 1, a = 2 })`, cty.TupleVal([]cty.Value{str("a"), str("b")})},
		{`values({ b = 1, a = 2 })`, cty.TupleVal([]cty.Value{num(2), num(1)})},
		{`range(3)`, cty.ListVal([]cty.Value{num(0), num(1), num(2)})},
		{`reverse([1, 2])`, cty.TupleVal([]cty.Value{num(2), num(1)})},
		{`slice(["a", "b", "c"], 1, 3)`, cty.TupleVal([]cty.Value{str("b"), str("c")})},
		{`sort(["b", "a"])`, cty.ListVal([]cty.Value{str("a"), str("b")})},
		{`zipmap(["a"], [1])`, cty.ObjectVal(map[string]cty.Value{"a": num(1)})},
		{`coalesce("", null, "x")`, str("x")},
		{`coalesce(null, 2)`, num(2)},
		{`jsonencode({ a = [1, true] })`, str(`{"a":[1,true]}`)},
		{`jsondecode("{\"a\": 1}").a`, num(1)},
		{`csvdecode("a,b\n1,2\n")[0].b`, str("2")},
		{`lower("AB")`, str("ab")},
		{`upper("ab")`, str("AB")},
		{`title("web node")`, str("Web Node")},
		{`trimspace("  x ")`, str("x")},
		{`chomp("x\n")`, str("x")},
		{`indent(2, "a\nb")`, str("a\n  b")},
		{`regex("[0-9]+", "web12")`, str("12")},
		{`substr("corral", 0, 3)`, str("cor")},
		{`strrev("abc")`, str("cba")},
		{`abs(-2)`, num(2)},
		{`ceil(1.2)`, num(2)},
		{`floor(1.8)`, num(1)},
		{`min(3, 1, 2)`, num(1)},
		{`max(3, 1, 2)`, num(3)},
		{`setunion(["a"], ["b"])`, cty.SetVal([]cty.Value{str("a"), str("b")})},
		{`tostring(1)`, str("1")},
		{`tonumber("2")`, num(2)},
		{`tobool("true")`, cty.True},
		{`tolist(["a"])`, cty.ListVal([]cty.Value{str("a")})},
		{`tomap({ a = "b" })`, cty.MapVal(map[string]cty.Value{"a": str("b")})},
		{`toset(["a", "a"])`, cty.SetVal([]cty.Value{str("a")})},
		{`try(jsondecode("{"), "fallback")`, str("fallback")},
		{`can(tonumber("x"))`, cty.False},
		// Terraform's length and replace.
		{`length("héllo")`, num(5)},
		{`length(["a", "b"])`, num(2)},
		{`length({ a = 1 })`, num(1)},
		{`replace("a-b-c", "-", "+")`, str("a+b+c")},
		{`replace("web12", "/[0-9]+/", "N")`, str("webN")},
		// Encodings and hashes.
		{`base64encode("héllo")`, str("aMOpbGxv")},
		{`base64decode("aMOpbGxv")`, str("héllo")},
		{`sha256("abc")`, str("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")},
		{`sha512("")`, str("cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")},
		{`sha1("abc")`, str("a9993e364706816aba3e25717850c26c9cd0d89d")},
		{`md5("abc")`, str("900150983cd24fb0d6963f7d28e17f72")},
		// CIDR arithmetic, IPv4 and IPv6.
		{`cidrsubnet("10.0.0.0/16", 8, 2)`, str("10.0.2.0/24")},
		{`cidrsubnet("10.0.0.5/16", 8, 255)`, str("10.0.255.0/24")},
		{`cidrsubnet("10.1.0.0/16", 0, 0)`, str("10.1.0.0/16")},
		{`cidrsubnet("fd00:fd12:3456:7890::/56", 16, 162)`, str("fd00:fd12:3456:7800:a200::/72")},
		{`cidrsubnet("2001:db8::/32", 96, 79228162514264337593543950335)`, str("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128")},
		{`cidrhost("10.12.112.0/20", 16)`, str("10.12.112.16")},
		{`cidrhost("10.12.112.0/20", 268)`, str("10.12.113.12")},
		{`cidrhost("10.0.0.0/24", -1)`, str("10.0.0.255")},
		{`cidrhost("fd00:fd12:3456:7890:00a2::/72", 34)`, str("fd00:fd12:3456:7890::22")},
		{`cidrnetmask("172.16.0.0/12")`, str("255.240.0.0")},
		{`cidrnetmask("10.0.0.0/32")`, str("255.255.255.255")},
		{`cidrnetmask("0.0.0.0/0")`, str("0.0.0.0")},
		// Files, relative to the cluster file's directory or home.
		{`file("motd.txt")`, str("hello\n")},
		{`file("~/id.pub")`, str("ssh-ed25519 AAAA")},
		{`filebase64("motd.txt")`, str("aGVsbG8K")},
		{`fileexists("motd.txt")`, cty.True},
		{`fileexists("nope.txt")`, cty.False},
		{`templatefile("tmpl/unit.tmpl", { ports = [80, 443], name = "web" })`, str("listen 80\nlisten 443\nname=WEB\n")},
		{`templatefile("list.tmpl", { items = ["a"] })`, cty.TupleVal([]cty.Value{str("a")})},
	}
	for _, tt := range tests {
		got, diags := eval(t, dir, tt.expr)
		if diags.HasErrors() {
			t.Errorf("%s: %s", tt.expr, diags.Error())
			continue
		}
		if !got.RawEquals(tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.expr, got, tt.want)
		}
	}
}

// Function errors are diagnostics at the call, in Terraform's words.
func TestFunctionErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ expr, want string }{
		{`cidrsubnet("10.0.0.0/24", 10, 1)`, "insufficient address space to extend prefix of 24 by 10"},
		{`cidrsubnet("fd00::/120", 9, 0)`, "insufficient address space to extend prefix of 120 by 9"},
		{`cidrsubnet("10.0.0.0/24", 2, 4)`, "prefix extension of 2 does not accommodate a subnet numbered 4"},
		{`cidrsubnet("10.0.0.0/24", 2, -1)`, "prefix extension of 2 does not accommodate a subnet numbered -1"},
		{`cidrsubnet("10.0.0.0/24", 2, 1.5)`, "must be a whole number, got 1.5"},
		{`cidrsubnet("10.0.0.0/24", -1, 0)`, "must not be negative"},
		{`cidrsubnet("10.0.0.0", 8, 0)`, `invalid CIDR expression "10.0.0.0"`},
		{`cidrhost("10.0.0.0/24", 256)`, "prefix of 24 does not accommodate a host numbered 256"},
		{`cidrhost("10.0.0.0/24", -257)`, "prefix of 24 does not accommodate a host numbered -257"},
		{`cidrnetmask("fd00::/8")`, "IPv6 addresses cannot have a netmask: fd00::/8"},
		{`file("nope.txt")`, `no file exists at "` + filepath.Join(dir, "nope.txt") + `"`},
		{`base64decode("!")`, "failed to decode base64 data"},
		{`base64decode("/w==")`, "not valid UTF-8"},
		{`replace("a", "/(/", "b")`, "invalid regular expression"},
		{`coalesce("", null)`, "no non-null, non-empty-string arguments"},
		{`length(1)`, "must be a string, a collection type, or a structural type"},
		{`templatefile("nope.tmpl", {})`, "no file exists at"},
		{`templatefile("nope.tmpl", "x")`, "no file exists at"},
	}
	for _, tt := range tests {
		_, diags := eval(t, dir, tt.expr)
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tt.want) {
			t.Errorf("%s: want an error with %q, got %v", tt.expr, tt.want, diags)
		}
		if len(diags) > 0 && diags[0].Subject.Start.Line != 1 {
			t.Errorf("%s: error not at the call: %v", tt.expr, diags[0].Subject)
		}
	}
}
