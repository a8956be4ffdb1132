// Package unit reads and writes systemd unit files the way fleet did, and
// holds fleet's rules for them.
//
// A unit file is kept as it was written: sections and options in order,
// unknown sections and options untouched (systemd and other tools read
// them), each with the line it came from so that errors can point at it.
// [File.Bytes] is the canonical form that is stored in etcd and handed to
// drivers; [File.Hash] is the SHA-1 of that form, so two files that differ
// only in comments or layout are the same unit.
//
// Unit names follow fleet and systemd: "web.service", a template
// "hello@.service" and its instances "hello@1.service". [Instantiate] turns a
// template's file into an instance's by expanding systemd specifiers (%i,
// %n, %p, %H …). The [X-Fleet] section carries fleet's scheduling
// constraints, read by [File.Fleet]; [Validate] checks a unit before it is
// accepted into the cluster, so that mistakes are reported at submit time
// with the file and line, not discovered later by an agent.
package unit
