package config

import (
	"fmt"

	"github.com/corral-dev/corral/clusterd/logship"
	"github.com/hashicorp/hcl/v2"
)

// Logs says where the machines ship their units' output and clusterd's
// own log: a CloudWatch Logs group or a directory on each machine. A file
// without a logs block ships nothing (the journals stay on the machines).
type Logs struct {
	// Destination is as written: "cloudwatch" (the cluster's group,
	// /corral/<cluster>), "cloudwatch:<group>" or "file:<directory>".
	Destination string
	// Region for CloudWatch Logs; empty means each machine's own (its
	// AWS_REGION, shared config or instance metadata).
	Region string
	// QueueLines and QueueBytes bound each stream's in-memory queue on a
	// machine; lines beyond them are dropped and counted.
	QueueLines int
	QueueBytes int
	DeclRange  hcl.Range
}

// Limits of the logs block's queue bounds.
const (
	minQueueLines = 100
	maxQueueLines = 1_000_000
	minQueueBytes = 64 << 10
	maxQueueBytes = 1 << 30
)

var logsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "destination", Required: true},
		{Name: "region"},
		{Name: "queue_lines"},
		{Name: "queue_bytes"},
	},
}

func decodeLogs(block *hcl.Block, ctx *hcl.EvalContext) (*Logs, hcl.Diagnostics) {
	l := &Logs{QueueLines: logship.DefaultQueueLines, QueueBytes: logship.DefaultQueueBytes, DeclRange: block.DefRange}
	content, diags := block.Body.Content(logsSchema)

	attr, d := decodeAttr(content, "destination", ctx, &l.Destination)
	diags = append(diags, d...)
	if attr != nil {
		// The cluster's name only fills in a bare "cloudwatch"; any name
		// checks the syntax.
		if _, _, err := logship.ParseDestination(l.Destination, "cluster"); err != nil {
			diags = append(diags, attrError(attr, "Invalid destination", err.Error()+"."))
		}
	}
	_, d = decodeAttr(content, "region", ctx, &l.Region)
	diags = append(diags, d...)
	for _, f := range []struct {
		name     string
		target   *int
		min, max int
	}{{"queue_lines", &l.QueueLines, minQueueLines, maxQueueLines}, {"queue_bytes", &l.QueueBytes, minQueueBytes, maxQueueBytes}} {
		attr, d := decodeAttr(content, f.name, ctx, f.target)
		diags = append(diags, d...)
		if attr != nil && !d.HasErrors() && (*f.target < f.min || *f.target > f.max) {
			diags = append(diags, attrError(attr, "Invalid "+f.name, fmt.Sprintf("%s must be between %d and %d, got %d.", f.name, f.min, f.max, *f.target)))
		}
	}
	return l, diags
}

// Settings are what clusterd reads from etcd (logship.SettingsKey) for
// this block, with a bare "cloudwatch" resolved to the cluster's group.
func (l *Logs) Settings(cluster string) logship.Settings {
	kind, target, _ := logship.ParseDestination(l.Destination, cluster) // checked when decoded
	return logship.Settings{Destination: kind + ":" + target, Region: l.Region, QueueLines: l.QueueLines, QueueBytes: l.QueueBytes}
}
