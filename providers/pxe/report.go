package pxe

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/corral-dev/corral/providers"
)

// BootError is a machine's own report that it failed to boot, as Reports
// delivers it: its message and the last lines of its log.
type BootError struct {
	Node    string
	Message string
	Log     []string // the last lines, oldest first
}

func (e *BootError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "failed to boot (it gave no reason)"
	}
	if len(e.Log) == 0 {
		return fmt.Sprintf("%s: %s", e.Node, msg)
	}
	return fmt.Sprintf("%s: %s; its last log lines:\n\t%s", e.Node, msg, strings.Join(e.Log, "\n\t"))
}

// report is the body of POST /report.
type report struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	Log    string `json:"log,omitempty"`
}

// lastLines returns at most n of s's last non-empty lines.
func lastLines(s string, n int) []string {
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// handleReport takes a machine's POST /report?mac=.
func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	m, ok := s.known(w, r)
	if !ok {
		return
	}
	var rep report
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &rep)
	}
	if err != nil {
		http.Error(w, "Corral boot server: want a JSON report of at most 1 MiB: "+err.Error(), http.StatusBadRequest)
		return
	}
	switch rep.Status {
	case StatusBooted, StatusJoined:
		s.log().Info("pxe: machine reported", "machine", m.Name, "status", rep.Status)
	case StatusInstalled:
		s.installed(m)
	case StatusError:
		err := &BootError{Node: m.Name, Message: rep.Error, Log: lastLines(rep.Log, maxLogLines)}
		s.log().Error("pxe: machine failed to boot", "machine", m.Name, "error", rep.Error)
		select {
		case s.reports <- providers.Report{Node: m.Name, Err: err}:
		default:
			s.log().Error("pxe: report dropped: nobody is reading Reports and its buffer is full", "machine", m.Name, "error", rep.Error)
		}
	default:
		http.Error(w, fmt.Sprintf("Corral boot server: unknown status %q: want booted, installed, joined or error", rep.Status), http.StatusBadRequest)
		return
	}
	if s.OnStatus != nil {
		s.OnStatus(m.Name, rep.Status)
	}
	w.WriteHeader(http.StatusNoContent)
}

// installed records that m has installed itself to its disk.
func (s *Server) installed(m Machine) {
	if !m.InstallToDisk {
		s.log().Warn("pxe: a machine not meant to install to disk reported that it did: ignored", "machine", m.Name)
		return
	}
	at := time.Now().UTC()
	s.mu.Lock()
	_, had := s.install[m.Name]
	if !had {
		s.install[m.Name] = at
	}
	s.mu.Unlock()
	if had {
		return
	}
	s.log().Info("pxe: machine installed to disk: it boots from its disk from now on", "machine", m.Name)
	if s.OnInstalled != nil {
		s.OnInstalled(m.Name, at)
	}
}
