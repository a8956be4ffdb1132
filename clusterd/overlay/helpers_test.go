package overlay_test

import (
	"slices"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/vishvananda/netns"
)

type machine = registry.Machine

func hasMachine(ms []machine, name string) bool {
	return slices.ContainsFunc(ms, func(m machine) bool { return m.Name == name })
}

func netnsHandle(name string) (netns.NsHandle, error) { return netns.GetFromName(name) }
