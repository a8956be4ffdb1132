package backup

import (
	"fmt"
	"strings"

	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"google.golang.org/protobuf/proto"
)

// ReadKeys returns the live keys under prefix in a snapshot file, with
// their latest values, without starting etcd: it reads etcd's key bucket
// (every revision of every key, in revision order) and keeps the last
// version of each, dropping deleted ones. provision uses it to see, before
// a restore, which machines and units the snapshot holds.
func ReadKeys(path, prefix string) (map[string][]byte, error) {
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("backup: %s does not open as an etcd database: %w", path, err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(schema.Key.Name())
		if b == nil {
			return fmt.Errorf("backup: %s has no key bucket: not an etcd v3 database", path)
		}
		return b.ForEach(func(k, v []byte) error {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return fmt.Errorf("backup: %s: a damaged key at revision %x: %w", path, k, err)
			}
			key := string(kv.Key)
			if !strings.HasPrefix(key, prefix) {
				return nil
			}
			if mvcc.IsTombstone(k) {
				delete(out, key)
			} else {
				out[key] = kv.Value
			}
			return nil
		})
	})
	return out, err
}
