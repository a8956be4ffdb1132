// Package templates renders what a node boots with: its Ignition config and
// its cloud-config, from one description, for every provider.
package templates

import (
	_ "github.com/coreos/ignition/v2/config/v3_4"
	_ "sigs.k8s.io/yaml"
)
