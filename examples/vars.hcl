# A cluster shaped by variables: `provision up examples/vars.hcl` runs two web
# nodes and a database node; `-var web_nodes=4` runs four web nodes.

variable "web_nodes" {
  type        = number
  default     = 2
  description = "How many web nodes to run."
  validation {
    condition     = var.web_nodes >= 1 && var.web_nodes <= 20
    error_message = "web_nodes must be between 1 and 20."
  }
}

variable "cidr" {
  type        = string
  default     = "10.78.0.0/16"
  description = "The range this cluster takes its networks from."
}

locals {
  nodes   = var.web_nodes + 1
  common  = { env = "demo" }
  machine = cidrsubnet(var.cidr, 8, 0) # 10.78.0.0/24: the nodes' network
  overlay = cidrsubnet(var.cidr, 1, 1) # 10.78.128.0/17: the containers'
}

cluster "demo" {
  etcd_members = local.nodes >= 3 ? 3 : 1
}

provider "local" {
  cidr = local.machine
}

node_group "web" {
  desired_capacity = var.web_nodes
  metadata         = merge(local.common, { role = "web" })
}

node_group "db" {
  desired_capacity = 1
  metadata         = merge(local.common, { role = "db" })
}

network {
  cidr = local.overlay
}

# Outputs can also use cluster: its name and machines, known once it is up.
output "web_ips" {
  description = "The web nodes' addresses."
  value       = [for m in cluster.machines : m.ip if m.metadata.role == "web"]
}

output "hosts" {
  description = "An /etc/hosts fragment for every machine."
  value       = join("", [for m in cluster.machines : format("%-15s %s\n", m.ip, m.name)])
}
