package clusterctl

// SSHTarget lets the external tests check how clusterctl ssh picks a
// machine without a cluster.
var SSHTarget = sshTarget
