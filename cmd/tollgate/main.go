// Command tollgate runs a Tollgate node and drives a cluster's admin API.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := rootCommand()
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a code after the command printed its own message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tollgate",
		Short: "Tollgate: a self-hosted API gateway cluster",
		Long: `Tollgate hosts, secures, meters and throttles HTTP APIs on a cluster of peer nodes.

Run a node with "tollgate node"; the other commands reach a node's admin API at
--admin URL or $TOLLGATE_ADMIN (default http://127.0.0.1:9080), with the token in
$TOLLGATE_ADMIN_TOKEN, else the one a local node wrote into ./tollgate-data.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(nodeCommand(), applyCommand(), deployCommand(), undeployCommand(),
		historyCommand(), rollbackCommand(), getCommand(), membersCommand(), versionCommand(),
		grantCommand(), revokeCommand(), appCommand(), callCommand(), workerCommand())
	return root
}
