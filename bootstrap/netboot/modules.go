package netboot

import (
	"bufio"
	"strings"
)

// ModulesList is the image's list of modules to load (see
// bootstrap/initramfs), one path a line, in load order.
const ModulesList = "/etc/corral/modules"

// ReadModuleList reads a module list: paths, one a line; blank lines and
// '#' comments are skipped.
func ReadModuleList(data string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
