// Package sshsession runs a command or an interactive shell over an SSH
// connection as ssh(1) does: the remote exit status becomes the local one,
// and a shell on a terminal gets a remote terminal of the same size, with
// the local one in raw mode. clusterctl ssh and provision ssh share it.
package sshsession

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Killed is a remote command that a signal ended.
type Killed struct {
	Code   int
	Signal string
}

func (e *Killed) Error() string { return "remote command killed by SIG" + e.Signal }

// Run runs command in a session and returns its exit status.
func Run(client *ssh.Client, command string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	sess, err := client.NewSession()
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
	return ExitStatus(sess.Run(command))
}

// Shell opens a login shell. When standard input is a terminal it asks for
// a remote terminal of the same size, puts the local one in raw mode (so
// keys such as ^C and the arrows go to the remote shell, which echoes) and
// passes on window size changes; otherwise the shell reads commands from
// standard input, as with ssh -T.
func Shell(client *ssh.Client, tty *os.File, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	sess, err := client.NewSession()
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
	if tty != nil && IsTerminal(tty) {
		fd := int(tty.Fd())
		w, h := termSize(fd)
		term := os.Getenv("TERM")
		if term == "" {
			term = "xterm"
		}
		modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 14400, ssh.TTY_OP_OSPEED: 14400}
		if err := sess.RequestPty(term, h, w, modes); err != nil {
			return 0, fmt.Errorf("asking for a terminal: %w", err)
		}
		restore, err := makeRaw(fd)
		if err != nil {
			return 0, err
		}
		defer restore()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, unix.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				w, h := termSize(fd)
				sess.WindowChange(h, w)
			}
		}()
	}
	if err := sess.Shell(); err != nil {
		return 0, err
	}
	return ExitStatus(sess.Wait())
}

// ExitStatus turns a session's end into an exit status. A command killed by
// a signal gets 128+n, as a shell reports it, and a message.
func ExitStatus(err error) (int, error) {
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit) && exit.Signal() != "":
		return exit.ExitStatus(), &Killed{Code: exit.ExitStatus(), Signal: exit.Signal()}
	case errors.As(err, &exit):
		return exit.ExitStatus(), nil
	case errors.As(err, &missing):
		return 0, errors.New("the remote command ended without an exit status (the connection was lost?)")
	}
	return 0, err
}

func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// termSize is the terminal's width and height, 80x24 if unknown.
func termSize(fd int) (int, int) {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 {
		return 80, 24
	}
	return int(ws.Col), int(ws.Row)
}

// makeRaw puts the terminal in raw mode, as cfmakeraw(3) does (and
// golang.org/x/term, which this module does not require), and returns how
// to restore it.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
