# The default cluster: three nodes on this machine. `make run` brings it up
# with `provision up examples/local.hcl`.

# The cluster's name; its state lives in .corral/local/ beside this file.
cluster "local" {
  # How many nodes run a voting etcd member: 1, 3, 5 or 7. The other
  # nodes are etcd clients.
  etcd_members = 3

  # How long a node may miss heartbeats before its units are rescheduled
  # elsewhere (a Go duration, 2s to 5m).
  machine_ttl = "10s"
}

# Where the nodes run: "local" runs them all on this host.
provider "local" {
  # The nodes' IPv4 network, /16 to /28. Node n gets host address .10+n,
  # so this /24 has room for 244 nodes.
  cidr = "10.77.0.0/24"
}

# A group of identical nodes, named core-1, core-2 and core-3.
node_group "core" {
  # How many nodes the group has. Edit it and run `provision up` again to
  # scale the group.
  desired_capacity = 3

  # Optional labels that units can select nodes by (fleet's
  # MachineMetadata), for example:
  # metadata = { role = "web" }
}

# The overlay network (flannel's model): every node leases one /24 of it and
# holds the subnet's first address on its bridge; containers attached to any
# node's bridge reach those on every other node.
network {
  cidr    = "10.1.0.0/16"
  backend = "vxlan" # vxlan, host-gw or udp
}
