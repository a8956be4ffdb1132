package templates

import (
	"bytes"
	"fmt"

	"github.com/coreos/ignition/v2/config/v3_4/types"
)

// EC2UserDataLimit is EC2's limit on user data: 16 KiB, counted before the
// base64 encoding that the API adds.
const EC2UserDataLimit = 16 << 10

// Delivery is how a config reaches a machine through its user data.
type Delivery int

const (
	// Inline: the user data is the config.
	Inline Delivery = iota
	// Gzipped: the user data is the cloud-config gzip'd; EC2 carries it
	// and cloud-init unpacks it.
	Gzipped
	// Pointer: the user data is a small Ignition config that replaces
	// itself with the full one, fetched from URL and checked against Hash.
	Pointer
)

func (d Delivery) String() string {
	switch d {
	case Inline:
		return "inline"
	case Gzipped:
		return "gzipped"
	case Pointer:
		return "pointer"
	}
	return fmt.Sprintf("Delivery(%d)", int(d))
}

// UserData is what a provider puts in a machine's user data.
type UserData struct {
	Data     []byte
	Delivery Delivery
	// For a Pointer: where the full config must be served before the
	// machine boots, and its hash ("sha512-<hex>"), which the pointer
	// carries and Ignition checks.
	URL, Hash string
}

// Fit makes a rendered config fit in limit bytes of user data. It is meant
// for plan time, so that what a machine boots with is decided, shown and
// diffed before anything boots; nothing is decided at boot.
//
// A config within the limit is returned as it is. An Ignition config over
// it becomes a pointer config (spec 3.4.0) whose ignition.config.replace
// fetches the full config from url and verifies its SHA-512; the caller
// must upload full to url before the machine boots. The pointer is checked
// with Ignition's parser like any rendered config.
//
// A cloud-config over the limit is gzip'd, which EC2 and cloud-init accept.
// If it is still too large, Fit fails: cloud-config has no include that
// verifies what it fetches (#include fetches without a hash), and Corral
// does not boot machines from unverified configs. Use Ignition, or move
// large files out of the node group's config.
func Fit(full []byte, f Format, limit int, url string) (UserData, error) {
	switch f {
	case FormatIgnition:
		if !bytes.HasPrefix(full, []byte("{")) {
			return UserData{}, fmt.Errorf("templates: fit: this is not an Ignition config (it does not start with '{')")
		}
	case FormatCloudConfig:
		if !bytes.HasPrefix(full, []byte(cloudConfigHeader)) {
			return UserData{}, fmt.Errorf("templates: fit: this is not a cloud-config (it does not start with %q)", cloudConfigHeader[:len(cloudConfigHeader)-1])
		}
	default:
		return UserData{}, fmt.Errorf("templates: fit: unknown format %q", f)
	}
	if len(full) <= limit {
		return UserData{Data: full, Delivery: Inline}, nil
	}
	if f == FormatCloudConfig {
		z := gz(full)
		if len(z) > limit {
			return UserData{}, fmt.Errorf("templates: the cloud-config is %d bytes, %d gzip'd, over the user-data limit of %d; "+
				"cloud-config cannot fetch the rest with a verified hash, so use Ignition or make the node group's files smaller", len(full), len(z), limit)
		}
		return UserData{Data: z, Delivery: Gzipped}, nil
	}
	if url == "" {
		return UserData{}, fmt.Errorf("templates: the Ignition config is %d bytes, over the user-data limit of %d, and there is no URL to serve it from", len(full), limit)
	}
	hash := "sha512-" + sha512Hex(full)
	cfg := types.Config{Ignition: types.Ignition{
		Version: IgnitionVersion,
		Config: types.IgnitionConfig{Replace: types.Resource{
			Source:       ptr(url),
			Verification: types.Verification{Hash: ptr(hash)},
		}},
	}}
	ptrCfg, err := marshalIgnition(cfg)
	if err != nil {
		return UserData{}, err
	}
	if err := CheckIgnition(ptrCfg); err != nil {
		return UserData{}, fmt.Errorf("templates: pointer config for %s: %w", url, err)
	}
	if len(ptrCfg) > limit {
		return UserData{}, fmt.Errorf("templates: even the pointer config is %d bytes, over the user-data limit of %d (URL of %d bytes)", len(ptrCfg), limit, len(url))
	}
	return UserData{Data: ptrCfg, Delivery: Pointer, URL: url, Hash: hash}, nil
}
