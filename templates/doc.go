// Package templates renders what a node boots with, from one description of
// it (a [Node]), in either of the two formats machines take as user data:
// an Ignition config (spec 3.4.0, built from Ignition's own Go types) or a
// cloud-config (cloud-init's format).
//
// Both formats reach the same end state, because both are rendered from the
// same list of files and units: the host name; the SSH keys; Corral's files
// under /etc/corral (the cluster's and node's names, the join token in a
// 0600 file, the CA); clusterd, fetched from the provider's asset URL and
// installed at /opt/bin/clusterd only if its SHA-512 matches;
// clusterd.service, whose ExecStart carries exactly the flags clusterd
// accepts; and the node group's own files and units.
//
// Nothing rendered here is trusted unchecked: a [Node] is validated first
// (every error names its field), every Ignition config is parsed back with
// Ignition's config package and any warning fails the render, and the tests
// run every cloud-config through `cloud-init schema`.
//
// Output is deterministic (maps sorted, gzip without timestamps), so that
// provision's plan can diff rendered user data. Configs over a provider's
// user-data limit are made to fit by [Fit] at plan time: an Ignition config
// becomes a pointer that fetches the full one and checks its hash; a
// cloud-config is gzip'd.
package templates
