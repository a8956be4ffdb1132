package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/corral-dev/corral/clusterd/election"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// electionKey is where the machines campaign to be the one that takes the
// scheduled snapshots, on the same pattern as the scheduler's engine.
const electionKey = "/corral/backup/leader"

// Save takes a snapshot through cli, verifies it, stores it in dest under
// Name, prunes dest to the newest s.Keep, and returns the record of it.
// work is a directory for the snapshot while it is checked.
func Save(ctx context.Context, cli *clientv3.Client, s Settings, dest Destination, work string, progress Progress) (Record, error) {
	info, err := Take(ctx, cli, work, progress)
	if err != nil {
		return Record{}, err
	}
	defer os.Remove(info.Path)
	now := time.Now().UTC()
	loc, err := dest.Put(ctx, Name(s.Cluster, now, info.Revision), info.Path)
	if err != nil {
		return Record{}, err
	}
	rec := Record{Time: now, Revision: info.Revision, Location: loc, Size: info.Size, SHA256: info.SHA256}
	if s.Keep > 0 {
		if _, err := Prune(ctx, dest, s.Cluster, s.Keep); err != nil {
			return rec, fmt.Errorf("backup: stored %s, but pruning to the newest %d failed: %w", loc, s.Keep, err)
		}
	}
	return rec, nil
}

// Scheduler takes the scheduled snapshots while this machine holds the
// backup election. Every machine runs one; exactly one of them acts.
type Scheduler struct {
	Client    *clientv3.Client
	MachineID string
	Work      string        // a directory for snapshots being checked
	TTL       time.Duration // the election's lease; default 10s
	Log       *slog.Logger
}

// Run campaigns, and while elected follows the settings and takes
// snapshots, until ctx ends; leadership lost is campaigned for again.
func (s *Scheduler) Run(ctx context.Context) {
	if s.TTL == 0 {
		s.TTL = 10 * time.Second
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	s.Log = s.Log.With("component", "backup")
	c := election.Campaign{Client: s.Client, Key: electionKey, ID: s.MachineID, TTL: s.TTL, Name: "backup scheduler", Log: s.Log}
	c.Run(ctx, s.loop)
}

// loop waits for each snapshot to fall due, following the settings as
// they change. A snapshot is due one period after the last success (so a
// new leader does not take one it needs not); with none yet, at once.
// A failure is logged and recorded, and tried again a period later.
func (s *Scheduler) loop(ctx context.Context, leader clientv3.Cmp) error {
	for {
		resp, err := s.Client.Get(ctx, SettingsKey)
		if err != nil {
			return err
		}
		var set *Settings
		var period time.Duration
		if len(resp.Kvs) > 0 {
			set = new(Settings)
			err := json.Unmarshal(resp.Kvs[0].Value, set)
			if err == nil {
				period, err = set.Period()
			}
			if err != nil {
				s.Log.Error("scheduled snapshots off: bad settings at "+SettingsKey, "err", err)
				set = nil
			}
		}
		var timer <-chan time.Time
		if set != nil {
			due := time.Now()
			last, failed, err := ReadRecords(ctx, s.Client)
			if err != nil {
				return err
			}
			for _, r := range []*Record{last, failed} {
				if r != nil && r.Time.Add(period).After(due) {
					due = r.Time.Add(period)
				}
			}
			timer = time.After(time.Until(due))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		changes := s.Client.Watch(wctx, SettingsKey, clientv3.WithRev(resp.Header.Revision+1))
		select {
		case <-ctx.Done():
			cancel()
			return ctx.Err()
		case wr, ok := <-changes:
			cancel()
			if !ok {
				return errors.New("settings watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
		case <-timer:
			cancel()
			s.snapshot(ctx, *set, leader)
		}
	}
}

// snapshot takes one scheduled snapshot and records how it went, if this
// machine still leads.
func (s *Scheduler) snapshot(ctx context.Context, set Settings, leader clientv3.Cmp) {
	start := time.Now()
	key := LastKey
	rec, err := func() (Record, error) {
		dest, err := Open(ctx, set)
		if err != nil {
			return Record{}, err
		}
		return Save(ctx, s.Client, set, dest, s.Work, nil)
	}()
	if err != nil {
		key = FailedKey
		rec = Record{Time: time.Now().UTC(), Error: err.Error()}
		s.Log.Error("scheduled snapshot failed; trying again next period", "to", set.Destination, "schedule", set.Schedule, "err", err)
	} else {
		s.Log.Info("snapshot taken", "location", rec.Location, "revision", rec.Revision, "size", rec.Size,
			"sha256", rec.SHA256, "took", time.Since(start).Round(time.Millisecond))
	}
	rec.Machine = s.MachineID
	b, _ := json.Marshal(rec)
	resp, err := s.Client.Txn(ctx).If(leader).Then(clientv3.OpPut(key, string(b))).Commit()
	switch {
	case err != nil:
		s.Log.Warn("recording the snapshot at "+key, "err", err)
	case !resp.Succeeded:
		s.Log.Warn("no longer elected: the snapshot is not recorded at " + key)
	}
}
