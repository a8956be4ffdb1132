package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"
)

// script is a shell script run as `sh -c SCRIPT corral ARG...`: arguments,
// never text pasted into the script, so nothing in them needs escaping
// twice. Its name stands for its text in error messages.
type script struct {
	name, text string
}

// command is one remote command: a script with its arguments, or (when
// script is nil) a plain argument vector.
type command struct {
	script *script
	args   []string
}

// argv is a plain command.
func argv(words ...string) command { return command{args: words} }

// with is s run with args.
func (s *script) with(args ...string) command { return command{script: s, args: args} }

// line is the command line sent to the machine, for its login shell to run.
// A login user other than root runs it through sudo -n: sudo without a
// password (as CoreOS's core has it), never one that waits for a prompt
// nobody answers.
func (c command) line(sudo bool) string {
	var words []string
	if sudo {
		words = append(words, "sudo", "-n")
	}
	if c.script != nil {
		words = append(words, "sh", "-c", quote(c.script.text), "corral")
	}
	for _, a := range c.args {
		words = append(words, quote(a))
	}
	return strings.Join(words, " ")
}

// String is the command as error messages show it: a script by its name.
func (c command) String() string {
	var words []string
	if c.script != nil {
		words = append(words, "sh", "-c", "<"+c.script.name+">", "corral")
	}
	for _, a := range c.args {
		words = append(words, quote(a))
	}
	return strings.Join(words, " ")
}

// quote makes s one word for a POSIX shell. Words made only of characters
// no shell treats specially stay as they are, which keeps commands in
// error messages readable.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// remote runs commands on one machine. The ssh connection implements it;
// the tests of what Launch asks of a machine with systemd implement it with
// a recording of the commands.
type remote interface {
	// run runs c with stdin (nil for none) and returns its stdout. A
	// command that fails returns a *RemoteError.
	run(ctx context.Context, c command, stdin io.Reader) (string, error)
}

// RemoteError is a command that failed on a machine: which machine, which
// command, how it failed and what it wrote to stderr.
type RemoteError struct {
	Node    string // the node's name
	Host    string // the address connected to
	Command string // the command, with scripts named rather than quoted
	Stderr  string
	Err     error // the exit status, or what broke the session
}

func (e *RemoteError) Error() string {
	msg := fmt.Sprintf("ssh: %s (%s): %s: %v", e.Node, e.Host, e.Command, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *RemoteError) Unwrap() error { return e.Err }

// conn is an ssh connection to one node's machine.
type conn struct {
	client *ssh.Client
	node   string
	addr   string
	sudo   bool
}

func (c *conn) Close() error { return c.client.Close() }

func (c *conn) run(ctx context.Context, cmd command, stdin io.Reader) (string, error) {
	fail := func(stderr string, err error) error {
		return &RemoteError{Node: c.node, Host: c.addr, Command: cmd.String(), Stderr: stderr, Err: err}
	}
	s, err := c.client.NewSession()
	if err != nil {
		return "", fail("", fmt.Errorf("opening a session: %w", err))
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	if stdin != nil {
		s.Stdin = stdin
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd.line(c.sudo)) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Closing the channel makes sshd hang up on the command; Run then
		// returns.
		s.Signal(ssh.SIGTERM)
		s.Close()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		var missing *ssh.ExitMissingError
		if errors.As(err, &missing) {
			err = errors.New("the connection closed before the command ended")
		}
		return stdout.String(), fail(stderr.String(), err)
	}
	return stdout.String(), nil
}
