package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

// Client calls a node's admin API. It is safe for concurrent use.
type Client struct {
	Base  string // e.g. http://127.0.0.1:9080
	Token string
	HTTP  *http.Client
}

// NewClient returns a client for the admin API at base.
func NewClient(base, token string) *Client {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// Do sends a request with a JSON body (nil for none) and decodes a JSON answer into
// out (nil to discard). An error answer comes back as *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.Base, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error *APIError `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			return e.Error
		}
		return &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API at %s: bad answer: %w", c.Base, err)
	}
	return nil
}

// Apply sends a bundle to /v1/apply; dryRun asks for the plan only.
func (c *Client) Apply(ctx context.Context, b *fsm.Bundle, dryRun bool) (*ApplyResult, error) {
	var res ApplyResult
	path := "/v1/apply"
	if dryRun {
		path += "?dryRun=true"
	}
	return &res, c.Do(ctx, http.MethodPost, path, b, &res)
}

// StageAction posts deploy, undeploy or rollback for an API (GROUP/API).
func (c *Client) StageAction(ctx context.Context, action, ref string, req StageRequest) (*fsm.DeployResult, error) {
	var res fsm.DeployResult
	return &res, c.Do(ctx, http.MethodPost, "/v1/apis/"+ref+"/"+action, req, &res)
}

// History returns an API's versions in a stage.
func (c *Client) History(ctx context.Context, ref string, stage fsm.Stage) (*HistoryView, error) {
	var res HistoryView
	return &res, c.Do(ctx, http.MethodGet, "/v1/apis/"+ref+"/history?stage="+url.QueryEscape(string(stage)), nil, &res)
}

// State returns the node's whole replicated state.
func (c *Client) State(ctx context.Context) (*fsm.State, error) {
	var s fsm.State
	return &s, c.Do(ctx, http.MethodGet, "/v1/state", nil, &s)
}
