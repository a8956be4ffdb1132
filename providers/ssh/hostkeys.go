package ssh

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyError is a machine that offered a host key other than the one on
// record: the machine was reinstalled, or something between here and there
// is pretending to be it. Nothing is sent to such a machine.
type HostKeyError struct {
	Node     string // the node's name
	Host     string // the address, as known_hosts writes it ("10.0.0.11", "[h]:2222")
	Recorded string // the fingerprints on record, e.g. "ssh-ed25519 SHA256:…"
	Offered  string // the fingerprint the machine offered
	Where    string // where the record is: a known_hosts file and line, or the recorded host keys
}

func (e *HostKeyError) Error() string {
	return fmt.Sprintf("ssh: host key of %s (%s) has changed: expected %s (from %s), offered %s; "+
		"if the machine was reinstalled, remove the old key from %s, else something may be intercepting the connection",
		e.Node, e.Host, e.Recorded, e.Where, e.Offered, e.Where)
}

// fingerprint is how host keys are recorded and shown: the key's type and
// its SHA-256 fingerprint, as `ssh-keygen -l` shows them.
func fingerprint(k ssh.PublicKey) string { return k.Type() + " " + ssh.FingerprintSHA256(k) }

// hostAlgorithms are the host key algorithms that can prove a key of type
// keyType: asking for only those makes a machine with keys of several types
// present the recorded one, rather than one the client happens to prefer,
// which would read as a changed key.
func hostAlgorithms(keyType string) []string {
	switch keyType {
	case ssh.KeyAlgoRSA:
		// An RSA key signs with SHA-2 where both ends can; SHA-1 last.
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	case "":
		return nil
	}
	return []string{keyType}
}

// hostKeyCheck returns the host key callback for a node at addr (host:port,
// as net.JoinHostPort writes it)
// and the host key algorithms to ask for.
func (p *Provider) hostKeyCheck(node, addr string) (ssh.HostKeyCallback, []string, error) {
	host := knownhosts.Normalize(addr)
	if len(p.KnownHosts) > 0 {
		return p.knownHostsCheck(node, addr)
	}
	p.mu.Lock()
	recorded := p.HostKeys[host]
	p.mu.Unlock()
	keyType, _, _ := strings.Cut(recorded, " ")
	if strings.HasPrefix(keyType, "SHA256:") {
		keyType = "" // a bare fingerprint: any algorithm
	}
	check := func(_ string, _ net.Addr, key ssh.PublicKey) error {
		offered := fingerprint(key)
		p.mu.Lock()
		defer p.mu.Unlock()
		rec, ok := p.HostKeys[host]
		switch {
		case ok && (rec == offered || rec == ssh.FingerprintSHA256(key)):
			return nil
		case ok:
			return &HostKeyError{Node: node, Host: host, Recorded: rec, Offered: offered, Where: "the recorded host keys"}
		}
		// Trust on first use: the first key seen is the machine's, and
		// the caller persists it before anything is sent to the machine.
		// The callback runs under the lock so that two connections to
		// one machine record one key.
		if p.OnNewHostKey != nil {
			if err := p.OnNewHostKey(host, offered); err != nil {
				return fmt.Errorf("ssh: %s (%s): recording host key %s: %w", node, host, offered, err)
			}
		}
		if p.HostKeys == nil {
			p.HostKeys = map[string]string{}
		}
		p.HostKeys[host] = offered
		return nil
	}
	return check, hostAlgorithms(keyType), nil
}

// knownHostsCheck checks host keys against known_hosts files only: a host
// that is not in them is refused, as ssh's StrictHostKeyChecking=yes does.
func (p *Provider) knownHostsCheck(node, addr string) (ssh.HostKeyCallback, []string, error) {
	db, err := knownhosts.New(p.KnownHosts...)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh: known_hosts: %w", err)
	}
	host := knownhosts.Normalize(addr)
	// knownhosts has no way to list a host's keys but this: check a key
	// nobody has, and the error lists the host's keys.
	var algos []string
	var keyErr *knownhosts.KeyError
	// (knownhosts wants a remote address, though it uses addr.)
	if err := db(addr, &net.TCPAddr{IP: net.IPv4zero}, throwaway()); errors.As(err, &keyErr) {
		for _, k := range keyErr.Want {
			for _, a := range hostAlgorithms(k.Key.Type()) {
				if !slices.Contains(algos, a) {
					algos = append(algos, a)
				}
			}
		}
	}
	check := func(_ string, remote net.Addr, key ssh.PublicKey) error {
		err := db(addr, remote, key)
		var keyErr *knownhosts.KeyError
		if !errors.As(err, &keyErr) {
			return err // nil, or a revoked key
		}
		if len(keyErr.Want) == 0 {
			return fmt.Errorf("ssh: %s (%s) is not in %s; it offered %s (add it, e.g. with ssh-keyscan, after checking it)",
				node, host, strings.Join(p.KnownHosts, ", "), fingerprint(key))
		}
		var rec, where []string
		for _, k := range keyErr.Want {
			rec = append(rec, fingerprint(k.Key))
			where = append(where, fmt.Sprintf("%s:%d", k.Filename, k.Line))
		}
		return &HostKeyError{Node: node, Host: host, Recorded: strings.Join(rec, ", "), Offered: fingerprint(key), Where: strings.Join(where, ", ")}
	}
	return check, algos, nil
}

// throwaway is a public key that no known_hosts file holds.
func throwaway() ssh.PublicKey {
	k, _ := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	return k
}
