package provision

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func TestQuoteHCL(t *testing.T) {
	got := quoteHCL("a\"b\\c\n\t${x} %{y} $z \x01é")
	want := `"a\"b\\c\n\t$${x} %%{y} $z \u0001é"`
	if got != want {
		t.Errorf("quoteHCL = %s, want %s", got, want)
	}
}

func TestRenderHCL(t *testing.T) {
	v := cty.ObjectVal(map[string]cty.Value{
		"empty":  cty.ListValEmpty(cty.String),
		"none":   cty.NullVal(cty.String),
		"n":      cty.NumberFloatVal(1.5),
		"on":     cty.True,
		"a b":    cty.MapValEmpty(cty.String),
		"nested": cty.TupleVal([]cty.Value{cty.StringVal("x"), cty.EmptyObjectVal}),
	})
	var b strings.Builder
	renderHCL(&b, v, "")
	want := `{
  "a b"  = {}
  empty  = []
  n      = 1.5
  nested = [
    "x",
    {},
  ]
  none   = null
  on     = true
}`
	if b.String() != want {
		t.Errorf("renderHCL:\n%s\nwant\n%s", b.String(), want)
	}
}

func TestToJSON(t *testing.T) {
	v := cty.TupleVal([]cty.Value{cty.NullVal(cty.DynamicPseudoType), cty.NumberIntVal(10), cty.SetVal([]cty.Value{cty.StringVal("a")})})
	b, err := toJSON(v)
	if err != nil || string(b) != `[null,10,["a"]]` {
		t.Errorf("toJSON = %s, %v", b, err)
	}
}
