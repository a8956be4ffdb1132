// Package pxe is the boot server for bare-metal nodes: machines that start
// from the network rather than from an image a cloud provider writes.
//
// The boot flow, from power-on to clusterd:
//
//  1. The firmware's PXE ROM asks DHCP for an address and a boot file. A
//     DHCP server configured by DnsmasqConfig (either the only DHCP server
//     of the network, or a proxy-DHCP server next to an existing one that
//     only adds the boot options) answers with iPXE's chainload binary:
//     undionly.kpxe for BIOS, ipxe.efi for UEFI.
//  2. The PXE ROM fetches that binary over TFTP, from dnsmasq's own TFTP
//     server or from ServeTFTP, and runs it.
//  3. iPXE asks DHCP again, this time with user class "iPXE" (option 175
//     is present too); dnsmasq recognises it and answers with this
//     server's http://…/boot.ipxe instead of the binary, which breaks the
//     loop that would otherwise chainload iPXE forever.
//  4. /boot.ipxe chains to /ipxe?mac=${mac:hexhyp}&uuid=${uuid}: iPXE
//     fills in the booting NIC's MAC and the SMBIOS UUID.
//  5. /ipxe finds the Machine by its MAC (and its UUID, when the machine
//     declares one) and answers the machine's own script: its profile's
//     kernel and initrds from /assets, with kernel arguments naming this
//     server's /ignition and /report URLs for the machine. An unknown MAC
//     gets a script that says so on the machine's console and exits back
//     to the firmware; a MAC in a Group's range is bound to a free slot.
//  6. The kernel boots. Corral's initramfs (a tiny init and clusterd)
//     fetches corral.config= (the machine's Ignition, rendered by package
//     templates for this machine) and applies it; an OS with its own
//     Ignition (Flatcar, Fedora CoreOS: Profile.OwnIgnition) is given
//     ignition.config.url= and ignition.platform.id=metal instead. Both
//     fetch clusterd from /assets, checked against its SHA-512.
//  7. The machine POSTs its progress to corral.report=: "booted",
//     "installed" (after writing itself to disk, for InstallToDisk
//     machines: from then on /ipxe tells it to boot from its disk),
//     "joined", or "error" with its last log lines, which reach provision
//     through Reports so that it stops waiting for that node and says why.
//
// The server only serves what it is given: the caller renders every config
// (templates.Render) and keeps every record (bindings through OnBind,
// installations through OnInstalled), so that nothing here needs state of
// its own across runs.
package pxe
