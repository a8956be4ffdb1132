package daemon

import (
	"bytes"
	"strings"
	"testing"

	"github.com/corral-dev/corral/bootstrap/pki"
)

func TestSealedCAOpensOnlyWithTheToken(t *testing.T) {
	ca, err := pki.NewCA("seal")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := seal(ca, tok)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Fatal("the sealed CA shows its key in clear")
	}
	got, err := unseal(sealed, tok)
	if err != nil || got.Hash() != ca.Hash() || !got.Key.Equal(ca.Key) {
		t.Fatalf("unseal: %v", err)
	}
	other, _ := pki.NewToken(ca)
	if _, err := unseal(sealed, other); err == nil || !strings.Contains(err.Error(), "join token is not the cluster's") {
		t.Fatalf("unseal with another token: %v", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := unseal(sealed, tok); err == nil {
		t.Fatal("a tampered sealed CA opened")
	}
}
