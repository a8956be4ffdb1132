package logship

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/corral-dev/corral/clusterd/settings"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// SettingsKey is where provision writes the cluster's logs block. Every
// clusterd watches it, so changing the destination needs no restart; no
// key means no shipping.
const SettingsKey = "/corral/config/logs"

// Settings is the logs block as clusterd reads it, JSON at SettingsKey.
type Settings struct {
	// Destination is "cloudwatch:<group>" or "file:<directory>", resolved
	// by provision (a bare "cloudwatch" names the cluster's group).
	Destination string `json:"destination"`
	// Region for CloudWatch Logs; empty means the machine's own.
	Region string `json:"region,omitempty"`
	// QueueLines and QueueBytes bound each stream's queue; 0 means the
	// default.
	QueueLines int `json:"queue_lines,omitempty"`
	QueueBytes int `json:"queue_bytes,omitempty"`
}

// Destination kinds.
const (
	CloudWatch = "cloudwatch"
	File       = "file"
)

// groupRE is CloudWatch Logs' rule for group names.
var groupRE = regexp.MustCompile(`^[.\-_/#A-Za-z0-9]{1,512}$`)

// ParseDestination splits a destination into its kind and target (the log
// group, or the directory). A bare "cloudwatch" is the cluster's own group,
// /corral/<cluster>.
func ParseDestination(dest, cluster string) (kind, target string, err error) {
	kind, target, _ = strings.Cut(dest, ":")
	switch kind {
	case CloudWatch:
		if target == "" {
			target = "/corral/" + cluster
		}
		if !groupRE.MatchString(target) {
			return "", "", fmt.Errorf("log group %q: a CloudWatch Logs group name is 1 to 512 letters, digits and . - _ / #", target)
		}
	case File:
		if !filepath.IsAbs(target) {
			return "", "", fmt.Errorf("file destination %q: give an absolute directory, e.g. \"file:/var/log/corral\"", target)
		}
		target = filepath.Clean(target)
	default:
		return "", "", fmt.Errorf("destination %q: want \"cloudwatch\", \"cloudwatch:<log group>\" or \"file:<directory>\"", dest)
	}
	return kind, target, nil
}

// Open makes the sink that s names.
func (s Settings) Open(ctx context.Context) (Sink, error) {
	kind, target, err := ParseDestination(s.Destination, "")
	if err != nil {
		return nil, err
	}
	if kind == File {
		return NewFileSink(target)
	}
	return DialCloudWatch(ctx, s.Region, target)
}

// Watch configures sh from the settings at SettingsKey, now and whenever
// they change, until ctx ends. Bad settings are logged and shipping stops
// (provision validates them, so that takes someone writing the key by
// hand).
func Watch(ctx context.Context, cli *clientv3.Client, sh *Shipper, log *slog.Logger) {
	var cur []byte
	apply := func(val []byte) {
		if string(val) == string(cur) {
			return
		}
		cur = val
		if val == nil {
			sh.SetSink(nil, 0, 0)
			log.Info("log shipping off")
			return
		}
		var s Settings
		err := json.Unmarshal(val, &s)
		var sink Sink
		if err == nil {
			sink, err = s.Open(ctx)
		}
		if err != nil {
			sh.SetSink(nil, 0, 0)
			log.Error("log shipping off: bad settings at "+SettingsKey, "err", err)
			return
		}
		sh.SetSink(sink, s.QueueLines, s.QueueBytes)
		log.Info("shipping logs", "to", sink.String())
	}
	settings.Watch(ctx, cli, SettingsKey, log, apply)
}
