package templates

import "fmt"

// Format is a kind of boot config.
type Format string

// The formats Corral renders.
const (
	FormatIgnition    Format = "ignition"
	FormatCloudConfig Format = "cloud-config"
)

// Render renders n in format f.
func Render(n Node, f Format) ([]byte, error) {
	switch f {
	case FormatIgnition:
		return Ignition(n)
	case FormatCloudConfig:
		return CloudConfig(n)
	}
	return nil, fmt.Errorf("templates: unknown format %q: want %q or %q", f, FormatIgnition, FormatCloudConfig)
}
