package logship

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"time"

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
	for ctx.Err() == nil {
		err := watchOnce(ctx, cli, apply)
		if ctx.Err() != nil {
			return
		}
		log.Warn("watching "+SettingsKey+"; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watchOnce reads the key and follows its changes until the watch breaks.
func watchOnce(ctx context.Context, cli *clientv3.Client, apply func([]byte)) error {
	resp, err := cli.Get(ctx, SettingsKey)
	if err != nil {
		return err
	}
	var val []byte
	if len(resp.Kvs) > 0 {
		val = resp.Kvs[0].Value
	}
	apply(val)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, SettingsKey, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				apply(nil)
			} else {
				apply(ev.Kv.Value)
			}
		}
	}
	return errors.New("watch closed")
}
