package netboot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Status is what the init POSTs to corral.report.
type Status struct {
	Status string `json:"status"` // "booted", "joined" or "error"
	Error  string `json:"error,omitempty"`
	Log    string `json:"log,omitempty"`
}

// Report POSTs st as JSON to url, trying a few times. An empty url
// reports nothing.
func Report(ctx context.Context, url string, st Status) error {
	if url == "" {
		return nil
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var last error
	for i := range 5 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(i) * time.Second):
			}
		}
		last = post(ctx, url, body)
		if last == nil {
			return nil
		}
	}
	return last
}

func post(ctx context.Context, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return nil
}
