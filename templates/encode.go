package templates

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
)

// gz compresses b the same way every time: no name, no modification time,
// one fixed level, so the same node renders the same bytes.
func gz(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // the level is valid
	w.Write(b)                                              // writes to a bytes.Buffer don't fail
	w.Close()
	return buf.Bytes()
}

// compressed returns gzip(b) when that makes it smaller, so that user data
// stays under providers' limits; small files stay as they are.
func compressed(b []byte) ([]byte, bool) {
	if len(b) < 64 {
		return b, false
	}
	if z := gz(b); len(z) < len(b) {
		return z, true
	}
	return b, false
}

// dataURL is an RFC 2397 data URL holding b, which Ignition decodes.
func dataURL(b []byte) string {
	return "data:;base64," + base64.StdEncoding.EncodeToString(b)
}

// sha512Hex is the lower-case hex SHA-512 of b.
func sha512Hex(b []byte) string {
	sum := sha512.Sum512(b)
	return hex.EncodeToString(sum[:])
}
