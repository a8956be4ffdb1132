//go:build !linux

package netboot

import (
	"fmt"
	"os"
)

// Main is the init of a network-booted Linux machine; elsewhere it only
// says so.
func Main() int {
	fmt.Fprintln(os.Stderr, "init: the network-boot init runs on Linux only")
	return 1
}
