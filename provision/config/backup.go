package config

import (
	"fmt"
	"time"

	"github.com/corral-dev/corral/clusterd/backup"
	"github.com/hashicorp/hcl/v2"
)

// Backup is the backup block: how often the cluster's elected machine
// takes an etcd snapshot, how many it keeps, and where they go.
//
//	backup {
//	  schedule    = "1h"
//	  keep        = 24
//	  destination = "dir:/var/backups/corral"   # or "s3", or "s3://bucket/prefix"
//	}
type Backup struct {
	Schedule time.Duration // default 1h
	Keep     int           // default 24
	// Destination is as written: "dir:<absolute directory>" (on the
	// machine that takes the snapshot), "s3" (the cluster's bucket under
	// backups/<cluster>/, provider "aws" only) or "s3://bucket[/prefix]".
	Destination string
	// Region for S3; empty means provider "aws"'s region, else each
	// machine's own.
	Region    string
	DeclRange hcl.Range
}

// Limits and defaults of the backup block.
const (
	defaultBackupSchedule = time.Hour
	defaultBackupKeep     = 24
	minBackupSchedule     = time.Minute
	maxBackupKeep         = 10000
)

var backupSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "schedule"},
		{Name: "keep"},
		{Name: "destination", Required: true},
		{Name: "region"},
	},
}

func decodeBackup(block *hcl.Block, ctx *hcl.EvalContext) (*Backup, hcl.Diagnostics) {
	b := &Backup{Schedule: defaultBackupSchedule, Keep: defaultBackupKeep, DeclRange: block.DefRange}
	content, diags := block.Body.Content(backupSchema)

	var schedule string
	attr, d := decodeAttr(content, "schedule", ctx, &schedule)
	diags = append(diags, d...)
	if attr != nil && !d.HasErrors() {
		var err error
		if b.Schedule, err = time.ParseDuration(schedule); err != nil {
			diags = append(diags, attrError(attr, "Invalid schedule",
				fmt.Sprintf(`schedule is how often to take a snapshot, a duration such as "1h" or "30m"; got %q.`, schedule)))
		} else if b.Schedule < minBackupSchedule {
			diags = append(diags, attrError(attr, "Invalid schedule",
				fmt.Sprintf("schedule must be at least %v (a snapshot streams the whole database), got %v.", minBackupSchedule, b.Schedule)))
		}
	}
	attr, d = decodeAttr(content, "keep", ctx, &b.Keep)
	diags = append(diags, d...)
	if attr != nil && !d.HasErrors() && (b.Keep < 1 || b.Keep > maxBackupKeep) {
		diags = append(diags, attrError(attr, "Invalid keep",
			fmt.Sprintf("keep is how many snapshots to keep, between 1 and %d; got %d.", maxBackupKeep, b.Keep)))
	}
	attr, d = decodeAttr(content, "destination", ctx, &b.Destination)
	diags = append(diags, d...)
	if attr != nil && !d.HasErrors() {
		if _, err := backup.ParseDestination(b.Destination, "cluster"); err != nil {
			diags = append(diags, attrError(attr, "Invalid destination", err.Error()+"."))
		}
	}
	_, d = decodeAttr(content, "region", ctx, &b.Region)
	diags = append(diags, d...)
	return b, diags
}

// checkBackup reports a bare "s3" destination without provider "aws"
// (only that provider makes the cluster a bucket), and with that provider
// makes its region the default one for S3.
func checkBackup(cfg *Config) hcl.Diagnostics {
	if cfg.Backup == nil {
		return nil
	}
	if cfg.Backup.Region == "" && cfg.Provider.AWS != nil {
		cfg.Backup.Region = cfg.Provider.AWS.Region
	}
	if cfg.Backup.Destination != "s3" || cfg.Provider.Type == "aws" {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Invalid destination",
		Detail: fmt.Sprintf(`destination "s3" is the cluster's own bucket, which only provider "aws" creates; this file's provider is %q: `+
			`name a bucket ("s3://my-bucket/corral") or a directory ("dir:/var/backups/corral").`, cfg.Provider.Type),
		Subject: cfg.Backup.DeclRange.Ptr(),
	}}
}

// Settings are what clusterd reads from etcd (backup.SettingsKey) for
// this block.
func (b *Backup) Settings(cluster string) backup.Settings {
	return backup.Settings{Cluster: cluster, Schedule: b.Schedule.String(), Keep: b.Keep, Destination: b.Destination, Region: b.Region}
}
