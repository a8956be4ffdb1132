# The first plan of a cluster: nothing exists yet.
cluster "golden" {
  etcd_members = 3
}
provider "local" { cidr = "10.99.0.0/24" }
network { cidr = "10.100.0.0/16" }
node_group "core" {
  desired_capacity = 3
  metadata         = { role = "web" }
  file "/etc/motd" { content = "managed by corral\n" }
}
node_group "db" { desired_capacity = 2 }
service "hello@.service" {
  source    = "hello@.service"
  instances = 2
}
