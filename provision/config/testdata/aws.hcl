# The aws provider's language, every setting written out.
cluster "web" {}

provider "aws" {
  region             = "us-west-2"
  availability_zones = ["us-west-2a", "us-west-2b", "us-west-2c"] # default: region + a,b,c
  vpc_cidr           = "10.1.0.0/16"                                # one /24 per zone unless subnets are given
  subnets            = ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"] # optional, one per zone
  allow_ssh_from     = "203.0.113.0/24"                             # a CIDR or a list of CIDRs; default: no SSH rule
  key_pair           = "my-keypair"
  endpoint           = ""    # override for emulators (LocalStack-style)
  profile            = ""    # shared-config profile (the --profile flag overrides it)
  overlay            = "vxlan"
}

node_group "core" {
  desired_capacity = 3
  min_size         = 3
  max_size         = 9
  instance_type    = "t3.small"
  image            = "flatcar-stable"
  volume "/var/lib/docker" { size_gb = 10 }
  load_balancer "web" {
    port        = 80
    target_port = 3000
    protocol    = "HTTP"
    sticky      = true
  }
}

backup_bucket { expiration_days = 10 }
log_group { retention_days = 7 }
