package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/node"
)

var clientOpts struct {
	admin   string
	dataDir string
	output  string
}

// clientCommand adds the flags every admin-API command shares. They are per command,
// not global, because "tollgate node --admin" is the address the node listens on.
func clientCommand(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().StringVar(&clientOpts.admin, "admin", "", "admin API URL (default $TOLLGATE_ADMIN or http://127.0.0.1:9080)")
	cmd.Flags().StringVar(&clientOpts.dataDir, "data", "./tollgate-data", "data dir of a local node whose admin-token is used when $TOLLGATE_ADMIN_TOKEN is unset")
	return cmd
}

// adminClient resolves the admin URL and token: flag, then environment, then the local
// node's data dir, so the quickstart needs no setup.
func adminClient(cmd *cobra.Command) (*node.Client, error) {
	base := clientOpts.admin
	if base == "" {
		base = os.Getenv("TOLLGATE_ADMIN")
	}
	if base == "" {
		base = "http://127.0.0.1:9080"
	}
	token := os.Getenv("TOLLGATE_ADMIN_TOKEN")
	if token == "" {
		path := filepath.Join(clientOpts.dataDir, node.TokenFile)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("no admin token: set TOLLGATE_ADMIN_TOKEN, or run from the directory of a local node (%s: %v)", path, err)
		}
		token = strings.TrimSpace(string(b))
	}
	return node.NewClient(base, token), nil
}

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 90*time.Second)
}

func addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&clientOpts.output, "output", "o", "table", "output format: table or json")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}
