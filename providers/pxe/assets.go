package pxe

import (
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"
)

// SHA512Header carries an asset's SHA-512, in hex, on /assets responses.
// Repr-Digest (RFC 9530) carries it too, in base64.
const SHA512Header = "X-Corral-Sha512"

// assetSum is an asset's SHA-512, computed once per version of the file
// (its size and modification time): kernels and initrds are large.
type assetSum struct {
	mu   sync.Mutex
	size int64
	mod  time.Time
	sum  []byte
}

// sum returns the SHA-512 of f, whose FileInfo is fi, from the cache when
// the file hasn't changed.
func (s *Server) sum(p string, f *os.File, fi os.FileInfo) ([]byte, error) {
	s.sumMu.Lock()
	a := s.sums[p]
	if a == nil {
		a = &assetSum{}
		s.sums[p] = a
	}
	s.sumMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sum != nil && a.size == fi.Size() && a.mod.Equal(fi.ModTime()) {
		return a.sum, nil
	}
	h := sha512.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return nil, err
	}
	a.sum, a.size, a.mod = h.Sum(nil), fi.Size(), fi.ModTime()
	return a.sum, nil
}

// openAsset opens the named asset's file, and hashes it.
func (s *Server) openAsset(name string) (*os.File, os.FileInfo, []byte, error) {
	p, ok := s.Assets[name]
	if !ok {
		return nil, nil, nil, os.ErrNotExist
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", p)
	}
	var sum []byte
	if err == nil {
		sum, err = s.sum(p, f, fi)
	}
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	return f, fi, sum, nil
}

// handleAsset serves /assets/NAME, with its SHA-512 in a header, and
// /assets/NAME.sha512, the sum alone in sha512sum's format. Range and
// conditional requests are answered by http.ServeContent.
func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	sumOnly := false
	if _, ok := s.Assets[name]; !ok {
		if n, cut := strings.CutSuffix(name, ".sha512"); cut {
			if _, ok := s.Assets[n]; ok {
				name, sumOnly = n, true
			}
		}
	}
	f, fi, sum, err := s.openAsset(name)
	if err != nil {
		if os.IsNotExist(err) && s.Assets[name] == "" {
			http.Error(w, fmt.Sprintf("Corral boot server: no asset named %q", name), http.StatusNotFound)
			return
		}
		s.log().Error("pxe: asset unavailable", "asset", name, "err", err)
		http.Error(w, fmt.Sprintf("Corral boot server: asset %q is unavailable on the boot server", name), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	hexSum := hex.EncodeToString(sum)
	if sumOnly {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Last-Modified", fi.ModTime().UTC().Format(http.TimeFormat))
		fmt.Fprintf(w, "%s  %s\n", hexSum, path.Base(name))
		return
	}
	s.log().Debug("pxe: asset served", "asset", name, "range", r.Header.Get("Range"), "from", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(SHA512Header, hexSum)
	w.Header().Set("Repr-Digest", "sha-512=:"+base64.StdEncoding.EncodeToString(sum)+":")
	http.ServeContent(w, r, name, fi.ModTime(), f)
}
