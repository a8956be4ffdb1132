package config

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"unicode/utf8"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// stringFunc is a function of one string that returns a string.
func stringFunc(desc string, fn func(string) (string, error)) function.Function {
	return function.New(&function.Spec{
		Description: desc,
		Params:      []function.Parameter{{Name: "str", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			out, err := fn(args[0].AsString())
			if err != nil {
				return cty.NilVal, function.NewArgError(0, err)
			}
			return cty.StringVal(out), nil
		},
	})
}

var base64EncodeFunc = stringFunc("Encodes a string's UTF-8 bytes in standard Base64.",
	func(s string) (string, error) { return base64.StdEncoding.EncodeToString([]byte(s)), nil })

// base64DecodeFunc refuses bytes that are not UTF-8, as Terraform does: HCL
// strings are Unicode text, and decoding binary into one would corrupt it.
var base64DecodeFunc = stringFunc("Decodes a standard Base64 string that holds UTF-8 text.",
	func(s string) (string, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return "", fmt.Errorf("failed to decode base64 data %q", s)
		}
		if !utf8.Valid(b) {
			return "", errors.New("the result of decoding the provided string is not valid UTF-8")
		}
		return string(b), nil
	})

// hashFunc hashes a string's UTF-8 bytes and returns the digest in hex.
func hashFunc(name string, h func() hash.Hash) function.Function {
	return stringFunc("Returns the "+name+" digest of a string's UTF-8 bytes, in hexadecimal.",
		func(s string) (string, error) {
			d := h()
			d.Write([]byte(s))
			return hex.EncodeToString(d.Sum(nil)), nil
		})
}

var (
	md5Func    = hashFunc("MD5", md5.New)
	sha1Func   = hashFunc("SHA-1", sha1.New)
	sha256Func = hashFunc("SHA-256", sha256.New)
	sha512Func = hashFunc("SHA-512", sha512.New)
)
