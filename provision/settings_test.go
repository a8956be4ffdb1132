package provision_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/deployhook"
	"github.com/corral-dev/corral/clusterd/logship"
	"github.com/corral-dev/corral/internal/clustertest"
)

// TestSettingsOnAndOff: the logs and deploy_hook blocks are written where
// clusterd watches them, with a marker in the state directory (the deploy
// hook's without its secret), and removing the blocks from the file
// deletes the keys and the markers.
func TestSettingsOnAndOff(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 1})
	sinkDir := t.TempDir()
	block := "logs {\n  destination = \"file:" + sinkDir + "\"\n}\ndeploy_hook {}\nnode_group \"core\" {"
	c.Edit(`node_group "core" {`, block)
	c.Up()
	ctx := context.Background()
	dir := c.Dir().Path
	for _, s := range []struct{ key, marker, note string }{
		{logship.SettingsKey, "logs.json", "logs: units' output and clusterd's log ship to file:" + sinkDir},
		{deployhook.SettingsKey, "deploy_hook.json", "deploy hook: generated its secret"},
	} {
		resp, err := c.Admin.Get(ctx, s.key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Errorf("after up with the block, %s is not set", s.key)
		}
		if _, err := os.Stat(filepath.Join(dir, s.marker)); err != nil {
			t.Errorf("after up with the block, marker: %v", err)
		}
		if !strings.Contains(c.Output(), s.note) {
			t.Errorf("up did not print %q:\n%s", s.note, c.Output())
		}
	}
	marker, err := os.ReadFile(filepath.Join(dir, "deploy_hook.json"))
	if err != nil {
		t.Fatal(err)
	}
	var public deployhook.Settings
	if err := json.Unmarshal(marker, &public); err != nil || public.Secret != "" || public.Port == 0 {
		t.Errorf("the deploy hook's marker %s: want its settings without the secret (%v)", marker, err)
	}

	c.Edit(block, `node_group "core" {`)
	c.Up()
	for _, s := range []struct{ key, marker, note string }{
		{logship.SettingsKey, "logs.json", "logs: shipping off (no logs block)"},
		{deployhook.SettingsKey, "deploy_hook.json", "deploy hook: off (no deploy_hook block)"},
	} {
		resp, err := c.Admin.Get(ctx, s.key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Errorf("after up without the block, %s is still %s", s.key, resp.Kvs[0].Value)
		}
		if _, err := os.Stat(filepath.Join(dir, s.marker)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after up without the block, marker %s: %v (want it gone)", s.marker, err)
		}
		if !strings.Contains(c.Output(), s.note) {
			t.Errorf("up did not print %q:\n%s", s.note, c.Output())
		}
	}
}
