package netboot

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	ignition "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/coreos/ignition/v2/config/v3_4/types"
)

// UnitDir is where units are written, as systemd would find them.
const UnitDir = "/etc/systemd/system"

// Fetcher gets a remote resource (an http or https URL).
type Fetcher func(ctx context.Context, url string) ([]byte, error)

// HTTPFetch fetches url with a plain GET.
func HTTPFetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// ParseConfig parses an Ignition config as Ignition does (spec 3.4.0 or
// an earlier 3.x, translated).
func ParseConfig(data []byte) (types.Config, error) {
	cfg, rpt, err := ignition.Parse(data)
	if err != nil {
		if r := strings.TrimSpace(rpt.String()); r != "" {
			return cfg, fmt.Errorf("ignition config: %w: %s", err, r)
		}
		return cfg, fmt.Errorf("ignition config: %w", err)
	}
	return cfg, nil
}

// Logf prints a progress line.
type Logf func(format string, args ...any)

// ApplyConfig writes cfg's directories, files, links and units under root
// (the file system's root: "/" on the node, a temporary directory in
// tests). Files carried in data: URLs are decoded (and gunzip'd); remote
// ones are fetched with fetch and checked against their verification hash,
// except that a file already in the image with the expected hash is kept
// as it is (the initramfs ships clusterd, which the config also names). If
// a remote file can't be fetched but the image has one at its path, the
// image's is kept, with a warning. Owners are not set: the image has root
// only.
func ApplyConfig(ctx context.Context, root string, cfg types.Config, fetch Fetcher, logf Logf) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for _, d := range cfg.Storage.Directories {
		perm := fs.FileMode(0o755)
		if d.Mode != nil {
			perm = fs.FileMode(*d.Mode)
		}
		p := under(root, d.Path)
		if err := os.MkdirAll(p, perm); err != nil {
			return err
		}
		if err := os.Chmod(p, perm); err != nil {
			return err
		}
	}
	for _, f := range cfg.Storage.Files {
		// The image has root alone: a file meant for another user would
		// be written with the wrong owner, so it is refused, clearly.
		if u := f.User.Name; u != nil && *u != "" && *u != "root" {
			return fmt.Errorf("ignition: file %s: owner %q does not exist here: Corral's initramfs has only root", f.Path, *u)
		}
		if g := f.Group.Name; g != nil && *g != "" && *g != "root" {
			return fmt.Errorf("ignition: file %s: group %q does not exist here: Corral's initramfs has only root", f.Path, *g)
		}
		if err := writeFile(ctx, root, f, fetch, logf); err != nil {
			return fmt.Errorf("ignition: file %s: %w", f.Path, err)
		}
	}
	for _, l := range cfg.Storage.Links {
		p := under(root, l.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		var target string
		if l.Target != nil {
			target = *l.Target
		}
		var err error
		if l.Hard != nil && *l.Hard {
			err = os.Link(under(root, target), p)
		} else {
			err = os.Symlink(target, p)
		}
		if err != nil {
			return fmt.Errorf("ignition: link %s: %w", l.Path, err)
		}
	}
	for _, u := range cfg.Systemd.Units {
		dir := under(root, UnitDir)
		if u.Contents != nil {
			if err := writeAtomic(filepath.Join(dir, u.Name), []byte(*u.Contents), 0o644); err != nil {
				return fmt.Errorf("ignition: unit %s: %w", u.Name, err)
			}
		}
		for _, d := range u.Dropins {
			if d.Contents == nil {
				continue
			}
			if err := writeAtomic(filepath.Join(dir, u.Name+".d", d.Name), []byte(*d.Contents), 0o644); err != nil {
				return fmt.Errorf("ignition: unit %s drop-in %s: %w", u.Name, d.Name, err)
			}
		}
	}
	return nil
}

// under is p inside root.
func under(root, p string) string {
	return filepath.Join(root, filepath.FromSlash(path.Clean("/"+p)))
}

func writeFile(ctx context.Context, root string, f types.File, fetch Fetcher, logf Logf) error {
	p := under(root, f.Path)
	perm := fs.FileMode(0o644)
	if f.Mode != nil {
		perm = fs.FileMode(*f.Mode) & fs.ModePerm
	}
	var content []byte
	var err error
	switch {
	case f.Contents.Source != nil:
		var keep bool
		content, keep, err = resource(ctx, p, f.Contents, fetch, logf)
		if err != nil {
			return err
		}
		if keep {
			return os.Chmod(p, perm) // through a link to /init: still 0755
		}
	default:
		if _, err := os.Lstat(p); err == nil && (f.Overwrite == nil || !*f.Overwrite) && len(f.Append) == 0 {
			return nil // nothing to write over an existing file
		}
	}
	for _, a := range f.Append {
		more, _, err := resource(ctx, "", a, fetch, logf)
		if err != nil {
			return err
		}
		if f.Contents.Source == nil && len(content) == 0 {
			if old, err := os.ReadFile(p); err == nil {
				content = old
			}
		}
		content = append(content, more...)
	}
	return writeAtomic(p, content, perm)
}

// resource is the content of r. With existing set, it reports keep
// instead when the file at that path is the one r names.
func resource(ctx context.Context, existing string, r types.Resource, fetch Fetcher, logf Logf) (content []byte, keep bool, err error) {
	src := *r.Source
	var sum func([]byte) bool
	if r.Verification.Hash != nil {
		if sum, err = verifier(*r.Verification.Hash); err != nil {
			return nil, false, err
		}
	}
	if strings.HasPrefix(src, "data:") {
		content, err = DecodeDataURL(src)
	} else {
		if existing != "" && sum != nil {
			if old, err := os.ReadFile(existing); err == nil && sum(old) {
				logf("keeping %s: the image's copy has the hash the config asks for", existing)
				return nil, true, nil
			}
		}
		if fetch == nil {
			return nil, false, fmt.Errorf("cannot fetch %s", src)
		}
		content, err = fetch(ctx, src)
		if err != nil && existing != "" {
			if _, serr := os.Stat(existing); serr == nil {
				logf("warning: keeping the image's %s: %v", existing, err)
				return nil, true, nil
			}
		}
	}
	if err != nil {
		return nil, false, err
	}
	if r.Compression != nil && *r.Compression != "" {
		if *r.Compression != "gzip" {
			return nil, false, fmt.Errorf("unsupported compression %q", *r.Compression)
		}
		zr, err := gzip.NewReader(bytes.NewReader(content))
		if err != nil {
			return nil, false, fmt.Errorf("gunzip: %w", err)
		}
		if content, err = io.ReadAll(zr); err != nil {
			return nil, false, fmt.Errorf("gunzip: %w", err)
		}
	}
	// Ignition checks the hash of what it fetched, before decompressing;
	// for the plain files Corral's configs name, both are the same.
	if sum != nil && !sum(content) {
		return nil, false, fmt.Errorf("%s: content does not match %s", redact(src), *r.Verification.Hash)
	}
	return content, false, nil
}

func redact(src string) string {
	if strings.HasPrefix(src, "data:") {
		return "data URL"
	}
	return src
}

// verifier checks content against an Ignition hash, "sha512-<hex>" or
// "sha256-<hex>".
func verifier(h string) (func([]byte) bool, error) {
	alg, want, ok := strings.Cut(h, "-")
	var newHash func() hash.Hash
	switch alg {
	case "sha512":
		newHash = sha512.New
	case "sha256":
		newHash = sha256.New
	}
	if !ok || newHash == nil {
		return nil, fmt.Errorf("unsupported verification hash %q", h)
	}
	return func(b []byte) bool {
		d := newHash()
		d.Write(b)
		return hex.EncodeToString(d.Sum(nil)) == strings.ToLower(want)
	}, nil
}

// DecodeDataURL decodes an RFC 2397 data: URL.
func DecodeDataURL(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "data:")
	if !ok {
		return nil, errors.New("not a data URL")
	}
	meta, data, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, errors.New("data URL without a comma")
	}
	unescaped, err := url.PathUnescape(data)
	if err != nil {
		return nil, fmt.Errorf("data URL: %w", err)
	}
	if strings.HasSuffix(meta, ";base64") {
		b, err := base64.StdEncoding.DecodeString(strings.TrimRight(unescaped, "\n"))
		if err != nil {
			if b2, err2 := base64.RawStdEncoding.DecodeString(strings.TrimRight(unescaped, "=")); err2 == nil {
				return b2, nil
			}
			return nil, fmt.Errorf("data URL: %w", err)
		}
		return b, nil
	}
	return []byte(unescaped), nil
}

// writeAtomic replaces p (a file, or a link: the link itself) with a file
// holding data.
func writeAtomic(p string, data []byte, perm fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".corral-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil { // not subject to the umask
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
