package vagrant

import (
	"bufio"
	"bytes"
	"strings"
)

// record is one line of Vagrant's --machine-readable output:
// timestamp,target,type,data... with the data unescaped.
type record struct {
	Target string // the machine, "" for the environment
	Type   string // e.g. "state", "ui", "error-exit"
	Data   []string
}

// unescape undoes Vagrant's escaping of a machine-readable field
// (Vagrant::UI::MachineReadable): commas as %!(VAGRANT_COMMA), newlines as
// \n and carriage returns as \r.
var unescape = strings.NewReplacer(`%!(VAGRANT_COMMA)`, ",", `\n`, "\n", `\r`, "\r")

// parseMachineReadable parses --machine-readable output. Lines that are
// not records (a Ruby warning on stdout) are skipped.
func parseMachineReadable(out []byte) []record {
	var recs []record
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(strings.TrimRight(sc.Text(), "\r"), ",")
		if len(f) < 3 || f[0] == "" || strings.Trim(f[0], "0123456789") != "" {
			continue
		}
		r := record{Target: f[1], Type: f[2], Data: f[3:]}
		for i, d := range r.Data {
			r.Data[i] = unescape.Replace(d)
		}
		recs = append(recs, r)
	}
	return recs
}

// machineState is a machine as `vagrant status` reports it.
type machineState struct {
	State    string // e.g. "running", "not_created", "poweroff"
	Human    string // state-human-short, e.g. "not created"
	Provider string // provider-name
}

// parseStatus is `vagrant status --machine-readable` by machine.
func parseStatus(out []byte) map[string]machineState {
	st := map[string]machineState{}
	for _, r := range parseMachineReadable(out) {
		if r.Target == "" || len(r.Data) == 0 {
			continue
		}
		m := st[r.Target]
		switch r.Type {
		case "state":
			m.State = r.Data[0]
		case "state-human-short":
			m.Human = r.Data[0]
		case "provider-name":
			m.Provider = r.Data[0]
		default:
			continue
		}
		st[r.Target] = m
	}
	return st
}

// errorExit is the message of the error-exit record, if any: Vagrant's
// own words for why it failed.
func errorExit(out []byte) (string, bool) {
	for _, r := range parseMachineReadable(out) {
		if r.Type == "error-exit" && len(r.Data) > 0 {
			return strings.TrimSpace(r.Data[len(r.Data)-1]), true
		}
	}
	return "", false
}

// sshConfig is what Launch needs of `vagrant ssh-config NAME`.
type sshConfig struct {
	HostName      string
	Port          string
	User          string
	IdentityFiles []string
}

// parseSSHConfig reads the Host block of `vagrant ssh-config` output
// (ssh_config(5) syntax: keyword and value, keywords in any case, values
// possibly in double quotes). Only the first Host block is read.
func parseSSHConfig(out []byte) sshConfig {
	var c sshConfig
	hosts := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		if k, v, ok := strings.Cut(line, "="); ok && !strings.ContainsAny(k, " \t") {
			key, val = k, v
		}
		if i := strings.IndexAny(key, "\t"); i >= 0 {
			key, val = key[:i], key[i+1:]+" "+val
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		switch strings.ToLower(key) {
		case "host":
			if hosts++; hosts > 1 {
				return c
			}
		case "hostname":
			c.HostName = val
		case "port":
			c.Port = val
		case "user":
			c.User = val
		case "identityfile":
			c.IdentityFiles = append(c.IdentityFiles, val)
		}
	}
	return c
}
