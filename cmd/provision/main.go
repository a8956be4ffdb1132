// Command provision is Corral's one binary: provision, clusterd and clusterctl.
package main

func main() {}
