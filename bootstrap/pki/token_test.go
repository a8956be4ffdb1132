package pki

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	ca := newCA(t, "prod")
	tok, err := NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != ca.Hash() {
		t.Errorf("CAHash = %s, want %s", tok.CAHash, ca.Hash())
	}
	s := tok.String()
	if want := "CRL1::" + ca.Hash() + "::"; !strings.HasPrefix(s, want) || len(s) != len(want)+64 {
		t.Errorf("String() = %q, want %q followed by 64 hex digits", s, want)
	}
	got, err := ParseToken("  " + s + "\n")
	if err != nil {
		t.Fatalf("ParseToken: %v", err)
	}
	if got != tok {
		t.Errorf("ParseToken(String()) = %+v, want %+v", got, tok)
	}
	if again, _ := NewToken(ca); again.Secret == tok.Secret {
		t.Error("two tokens have the same secret")
	}
}

func TestParseTokenErrors(t *testing.T) {
	hash := "sha256:" + strings.Repeat("ab", 32)
	secret := strings.Repeat("0f", 32)
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"K10" + hash + "::" + secret, "wrong prefix, expected CRL1::"},
		{"CRL2::" + hash + "::" + secret, "wrong prefix"},
		{"CRL1::" + hash, "missing"},
		{"CRL1::" + hash + secret, "missing"},
		{"CRL1::md5:" + strings.Repeat("ab", 16) + "::" + secret, "CA hash"},
		{"CRL1::sha256:" + strings.Repeat("ab", 31) + "::" + secret, "CA hash"},
		{"CRL1::sha256:" + strings.Repeat("AB", 32) + "::" + secret, "CA hash"},
		{"CRL1::" + hash + "::" + secret[:63], "secret"},
		{"CRL1::" + hash + "::" + secret + "::x", "secret"},
		{"CRL1::" + hash + "::" + strings.Repeat("zz", 32), "secret"},
	} {
		_, err := ParseToken(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseToken(%q) error = %v, want one containing %q", tc.in, err, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "join token: ") {
			t.Errorf("ParseToken(%q) error %q does not say it is about the join token", tc.in, err)
		}
	}
}

func TestSecretMatches(t *testing.T) {
	tok := Token{CAHash: "sha256:x", Secret: strings.Repeat("0f", 32)}
	if !tok.SecretMatches(strings.Repeat("0f", 32)) {
		t.Error("the token's own secret does not match")
	}
	for _, s := range []string{"", strings.Repeat("0f", 31) + "0e", strings.Repeat("0f", 31)} {
		if tok.SecretMatches(s) {
			t.Errorf("secret %q matches", s)
		}
	}
	if (Token{}).SecretMatches("") {
		t.Error("a token with no secret matches the empty string")
	}
}

func TestTokenLogValueRedactsSecret(t *testing.T) {
	tok := Token{CAHash: "sha256:abc", Secret: strings.Repeat("0f", 32)}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("joining", "token", tok)
	if out := buf.String(); strings.Contains(out, tok.Secret) || !strings.Contains(out, tok.CAHash) {
		t.Errorf("log line %q: want the CA hash and not the secret", out)
	}
}
