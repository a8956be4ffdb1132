package clusterctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/corral-dev/corral/clusterd/keys"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Exit codes, as etcdctl v2 chose them.
const (
	exitFailure     = 1 // bad arguments, or a failure on this side
	exitServerError = 4 // an error from the cluster
)

// requestTimeout bounds each one-shot key command, as etcdctl v2's
// --total-timeout did by default, so that a unit's ExecStartPre cannot hang
// on an unreachable cluster. Watches are not bounded.
const requestTimeout = 5 * time.Second

// ExitError is an error that calls for a particular process exit code.
type ExitError struct {
	Code int
	Err  error
}

// Error returns the line to print on stderr, in etcdctl v2's form:
// "Error: 100: Key not found (/foo/bar) [12]".
func (e *ExitError) Error() string { return "Error: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ExitError) Unwrap() error { return e.Err }

// KVCommands returns the etcdctl-v2-style key commands: set, get, mk,
// update, rm, rmdir, mkdir, ls, watch and exec-watch. connect gives a ready
// client (the root command owns flags and certificates); each command closes
// the client it was given when it is done.
func KVCommands(connect func(ctx context.Context) (*clientv3.Client, error)) []*cobra.Command {
	kv := kvCommands{connect: connect}
	cmds := []*cobra.Command{
		kv.write("set", "Set the value of a key", (*keys.Keys).Set),
		kv.get(),
		kv.write("mk", "Make a new key with a given value", (*keys.Keys).Mk),
		kv.write("update", "Update an existing key with a given value", (*keys.Keys).Update),
		kv.rm(),
		kv.rmdir(),
		kv.mkdir(),
		kv.ls(),
		kv.watch(),
		kv.execWatch(),
	}
	for _, cmd := range cmds {
		cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
			return &ExitError{Code: exitFailure, Err: err}
		})
	}
	return cmds
}

type kvCommands struct {
	connect func(ctx context.Context) (*clientv3.Client, error)
}

// run adapts fn to cobra's RunE: it bounds the command by timeout (if not
// zero), connects, and closes the client afterwards. An error from fn
// becomes an ExitError with etcdctl v2's server-error status, unless it
// already is one.
func (kv kvCommands) run(timeout time.Duration, fn func(ctx context.Context, k *keys.Keys, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return withClient(kv.connect, timeout, func(ctx context.Context, c *clientv3.Client, cmd *cobra.Command, args []string) error {
		err := fn(ctx, keys.New(c), cmd, args)
		var exit *ExitError
		if err != nil && !errors.As(err, &exit) {
			err = &ExitError{Code: exitServerError, Err: err}
		}
		return err
	})
}

// usage wraps a cobra argument check so that a bad command line exits with
// etcdctl v2's bad-arguments status.
func usage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &ExitError{Code: exitFailure, Err: err}
		}
		return nil
	}
}

// write is set, mk or update: op writes KEY VALUE, and the new value is
// printed.
func (kv kvCommands) write(verb, short string, op func(*keys.Keys, context.Context, string, string, time.Duration) (*keys.Node, error)) *cobra.Command {
	var ttl int
	cmd := &cobra.Command{
		Use:   verb + " KEY VALUE",
		Short: short,
		Args:  usage(cobra.ExactArgs(2)),
		RunE: kv.run(requestTimeout, func(ctx context.Context, k *keys.Keys, cmd *cobra.Command, args []string) error {
			n, err := op(k, ctx, args[0], args[1], time.Duration(ttl)*time.Second)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.Value)
			return nil
		}),
	}
	cmd.Flags().IntVar(&ttl, "ttl", 0, "key time-to-live in seconds")
	return cmd
}

func (kv kvCommands) get() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Retrieve the value of a key",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: kv.run(requestTimeout, func(ctx context.Context, k *keys.Keys, cmd *cobra.Command, args []string) error {
			n, err := k.Get(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.Value)
			return nil
		}),
	}
	// Reads are always linearizable here; etcdctl v2 made that optional.
	cmd.Flags().BoolP("quorum", "q", false, "require quorum for the read (always on)")
	return cmd
}

func (kv kvCommands) rm() *cobra.Command {
	var dir, recursive bool
	cmd := &cobra.Command{
		Use:   "rm KEY",
		Short: "Remove a key or a directory",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: kv.run(requestTimeout, func(ctx context.Context, k *keys.Keys, _ *cobra.Command, args []string) error {
			if dir && !recursive {
				return k.Rmdir(ctx, args[0])
			}
			return k.Rm(ctx, args[0], recursive)
		}),
	}
	cmd.Flags().BoolVar(&dir, "dir", false, "remove the key if it is an empty directory or a key-value pair")
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove the key and everything below it")
	return cmd
}

func (kv kvCommands) rmdir() *cobra.Command {
	return &cobra.Command{
		Use:   "rmdir DIR",
		Short: "Remove an empty directory or a key-value pair",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: kv.run(requestTimeout, func(ctx context.Context, k *keys.Keys, _ *cobra.Command, args []string) error {
			return k.Rmdir(ctx, args[0])
		}),
	}
}

func (kv kvCommands) mkdir() *cobra.Command {
	var ttl int
	cmd := &cobra.Command{
		Use:   "mkdir DIR",
		Short: "Make a new directory",
		Args:  usage(cobra.ExactArgs(1)),
		RunE: kv.run(requestTimeout, func(ctx context.Context, k *keys.Keys, _ *cobra.Command, args []string) error {
			return k.Mkdir(ctx, args[0], time.Duration(ttl)*time.Second)
		}),
	}
	cmd.Flags().IntVar(&ttl, "ttl", 0, "directory time-to-live in seconds")
	return cmd
}

func (kv kvCommands) ls() *cobra.Command {
	var recursive, slash bool
	cmd := &cobra.Command{
		Use:   "ls [DIR]",
		Short: "Retrieve a directory",
		Args:  usage(cobra.MaximumNArgs(1)),
		RunE: kv.run(requestTimeout, func(ctx context.Context, k *keys.Keys, cmd *cobra.Command, args []string) error {
			dir := "/"
			if len(args) > 0 {
				dir = args[0]
			}
			nodes, err := k.Ls(ctx, dir, recursive)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, n := range nodes {
				if n.Dir && slash {
					fmt.Fprintln(out, n.Key+"/")
				} else {
					fmt.Fprintln(out, n.Key)
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "list everything below DIR")
	cmd.Flags().BoolVarP(&slash, "p", "p", false, "append a slash (/) to directories")
	cmd.Flags().Bool("sort", false, "sort the results (always on)")
	cmd.Flags().BoolP("quorum", "q", false, "require quorum for the read (always on)")
	return cmd
}

func (kv kvCommands) watch() *cobra.Command {
	var recursive, forever bool
	var after int64
	cmd := &cobra.Command{
		Use:   "watch KEY",
		Short: "Watch a key for changes",
		Long: `Watch a key for changes and print the new value (with --recursive, an
"[action] key" line first). Stops after one change unless --forever.`,
		Args: usage(cobra.ExactArgs(1)),
		RunE: kv.run(0, func(ctx context.Context, k *keys.Keys, cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			err := k.WatchAfter(ctx, args[0], recursive, after, func(e keys.Event) error {
				if e.Node.Dir {
					return nil
				}
				if recursive {
					fmt.Fprintf(out, "[%s] %s\n", e.Action, e.Node.Key)
				}
				if e.Action == "delete" {
					var prev string
					if e.PrevNode != nil {
						prev = e.PrevNode.Value
					}
					fmt.Fprintln(out, "PrevNode.Value:", prev)
				} else {
					fmt.Fprintln(out, e.Node.Value)
				}
				if !forever {
					return errStop
				}
				return nil
			})
			return endOfWatch(ctx, err)
		}),
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "watch everything below KEY too")
	cmd.Flags().BoolVarP(&forever, "forever", "f", false, "keep watching until interrupted")
	cmd.Flags().Int64Var(&after, "after-index", 0, "watch changes after this index (etcd revision)")
	return cmd
}

func (kv kvCommands) execWatch() *cobra.Command {
	var recursive bool
	var after int64
	cmd := &cobra.Command{
		Use:   "exec-watch KEY -- COMMAND [ARG...]",
		Short: "Watch a key for changes and run a command on each",
		Long: `Watch a key for changes and run COMMAND on each one, with the change in
its environment: ETCD_WATCH_ACTION, ETCD_WATCH_KEY, ETCD_WATCH_VALUE and
ETCD_WATCH_MODIFIED_INDEX. Runs until interrupted.`,
		Args: usage(func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return errors.New("key and command to exec required")
			}
			if cmd.ArgsLenAtDash() > 1 {
				return errors.New("one key before --, the command after it")
			}
			return nil
		}),
		RunE: kv.run(0, func(ctx context.Context, k *keys.Keys, cmd *cobra.Command, args []string) error {
			key, argv := args[0], args[1:]
			err := k.WatchAfter(ctx, key, recursive, after, func(e keys.Event) error {
				if e.Node.Dir {
					fmt.Fprintf(cmd.ErrOrStderr(), "Ignored dir %s change\n", e.Node.Key)
					return nil
				}
				// One change at a time, in order: unlike etcdctl v2, which
				// started each command without waiting, a slow command
				// delays the next rather than overlapping it.
				c := exec.CommandContext(ctx, argv[0], argv[1:]...)
				c.Env = append(os.Environ(),
					"ETCD_WATCH_ACTION="+e.Action,
					"ETCD_WATCH_MODIFIED_INDEX="+strconv.FormatInt(e.Node.ModifiedIndex, 10),
					"ETCD_WATCH_KEY="+e.Node.Key,
					"ETCD_WATCH_VALUE="+e.Node.Value,
				)
				c.Stdout, c.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
				// The command's own failure is its business, as in v2;
				// only a command that cannot be run at all ends the watch.
				if err := c.Run(); err != nil && !isExit(err) && ctx.Err() == nil {
					return &ExitError{Code: exitFailure, Err: err}
				}
				return nil
			})
			return endOfWatch(ctx, err)
		}),
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "watch everything below KEY too")
	cmd.Flags().Int64Var(&after, "after-index", 0, "watch changes after this index (etcd revision)")
	return cmd
}

// errStop ends a watch that has seen what it was waiting for.
var errStop = errors.New("stop watching")

// endOfWatch maps how a watch ended to the command's result: being
// interrupted is a normal end, as it was for etcdctl v2.
func endOfWatch(ctx context.Context, err error) error {
	if errors.Is(err, errStop) || ctx.Err() != nil {
		return nil
	}
	return err
}

// isExit reports whether err is a command exiting unsuccessfully, as opposed
// to one that could not be started.
func isExit(err error) bool {
	var exit *exec.ExitError
	return errors.As(err, &exit)
}
