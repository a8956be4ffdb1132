# The coreos-vagrant workflow: N machines on a private network, clusterd on
# each. Needs vagrant and a Vagrant provider (VirtualBox here) with the box.
#
#   provision render examples/vagrant.hcl --format vagrantfile   # look first
#   provision up examples/vagrant.hcl
cluster "vagrant" {
  etcd_members = 3
}
provider "vagrant" {
  box      = "flatcar-stable"
  provider = "virtualbox"
  network  = "172.17.8.0/24" # machine N gets 172.17.8.100+N, as coreos-vagrant did
  memory   = 1024
  cpus     = 1
}
node_group "core" {
  desired_capacity = 3
}
