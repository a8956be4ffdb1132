package daemon

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"

	"github.com/corral-dev/corral/bootstrap/pki"
)

// sealedCA is the CA as stored in etcd: encrypted with a key derived from the
// join token's secret, so an etcd client certificate alone can't mint nodes.
type sealedCA struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func sealKey(t pki.Token) []byte {
	k := sha256.Sum256([]byte("corral sealed CA v1\x00" + t.Secret))
	return k[:]
}

func seal(ca *pki.CA, t pki.Token) ([]byte, error) {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(sealedCA{Cert: string(ca.CertPEM()), Key: string(keyPEM)})
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(t)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, nil), nil
}

func unseal(b []byte, t pki.Token) (*pki.CA, error) {
	aead, err := newAEAD(t)
	if err != nil {
		return nil, err
	}
	if len(b) < aead.NonceSize() {
		return nil, errors.New("clusterd: the sealed CA is truncated")
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], nil)
	if err != nil {
		return nil, errors.New("clusterd: can't open the sealed CA: this node's join token is not the cluster's")
	}
	var s sealedCA
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, err
	}
	return pki.ParseCA([]byte(s.Cert), []byte(s.Key))
}

func newAEAD(t pki.Token) (cipher.AEAD, error) {
	block, err := aes.NewCipher(sealKey(t))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
