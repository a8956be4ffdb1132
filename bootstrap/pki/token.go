package pki

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

const (
	tokenPrefix = "CRL1"
	tokenSep    = "::"
	hashPrefix  = "sha256:"
	tokenFormat = "CRL1::sha256:<64 hex digits>::<64 hex digits>"
)

// Token lets a node join a cluster. Like a k3s token, it pins the cluster CA
// by hash, so a joining node can tell the genuine CA from one a man in the
// middle presents, and it carries a shared secret that members require before
// they sign a certificate.
type Token struct {
	CAHash string // "sha256:<hex>", as returned by [CA.Hash]
	Secret string // hex
}

// NewToken returns a token pinning ca, with a fresh 32-byte random secret.
func NewToken(ca *CA) (Token, error) {
	if ca == nil || ca.Cert == nil {
		return Token{}, errors.New("pki: token: no CA; create or load the cluster CA first")
	}
	var secret [32]byte
	rand.Read(secret[:]) // never fails; it crashes the program rather than return weak bytes
	return Token{CAHash: ca.Hash(), Secret: hex.EncodeToString(secret[:])}, nil
}

// String returns the token in its text form, "CRL1::sha256:<hex>::<secret>",
// which [ParseToken] reads. It contains the secret.
func (t Token) String() string {
	return tokenPrefix + tokenSep + t.CAHash + tokenSep + t.Secret
}

// LogValue keeps the secret out of structured logs: a token passed to slog
// is logged by its CA hash only.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("ca_hash", t.CAHash), slog.String("secret", "REDACTED"))
}

// ParseToken reads a token in the form [Token.String] writes, ignoring
// surrounding whitespace (tokens are often pasted or read from files).
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("join token: empty; expected " + tokenFormat)
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix+tokenSep)
	if !ok {
		return Token{}, errors.New("join token: wrong prefix, expected " + tokenFormat)
	}
	hash, secret, ok := strings.Cut(rest, tokenSep)
	if !ok {
		return Token{}, errors.New("join token: missing \"::<secret>\" after the CA hash; expected " + tokenFormat)
	}
	if !strings.HasPrefix(hash, hashPrefix) || !isHex(hash[len(hashPrefix):], 64) {
		return Token{}, fmt.Errorf("join token: CA hash %q is not \"sha256:\" followed by 64 lowercase hex digits", hash)
	}
	if !isHex(secret, 64) {
		return Token{}, errors.New("join token: secret is not 64 lowercase hex digits (was the token truncated?)")
	}
	return Token{CAHash: hash, Secret: secret}, nil
}

// SecretMatches reports whether s is the token's secret, in time that does
// not depend on where they differ, so the secret cannot be guessed byte by
// byte. An empty secret never matches.
func (t Token) SecretMatches(s string) bool {
	return t.Secret != "" && subtle.ConstantTimeCompare([]byte(t.Secret), []byte(s)) == 1
}

// isHex reports whether s is n lowercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
