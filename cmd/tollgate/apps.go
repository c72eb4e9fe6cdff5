package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/node"
)

func grantCommand() *cobra.Command {
	var stages, expires string
	cmd := &cobra.Command{
		Use:   "grant APP GROUP/API --stages S[,S] [--expires RFC3339]",
		Short: "Authorize an app to call an API in some stages",
		Long: `Authorize an app to call an API in the given stages, optionally until a time. It
replaces the app's earlier grant for that API. Takes effect on every node as soon as it
commits.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := fsm.GrantSpec{App: args[0], API: args[1]}
			for _, s := range strings.Split(stages, ",") {
				st, err := fsm.ParseStage(s)
				if err != nil {
					return fmt.Errorf("--stages: %v", err)
				}
				g.Stages = append(g.Stages, st)
			}
			if expires != "" {
				t, err := time.Parse(time.RFC3339, expires)
				if err != nil {
					return fmt.Errorf("--expires: want RFC 3339, like 2027-01-01T00:00:00Z: %v", err)
				}
				g.Expires = &t
			}
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			if err := c.Do(ctx, "POST", "/v1/grants", g, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "granted %s on %s in %s\n", g.App, g.API, stages)
			return nil
		},
	}
	cmd.Flags().StringVar(&stages, "stages", "RELEASE", "stages, comma-separated")
	cmd.Flags().StringVar(&expires, "expires", "", "expiry time (RFC 3339); default never")
	return clientCommand(cmd)
}

func revokeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke APP GROUP/API",
		Short: "Remove an app's grant for an API",
		Long:  `Remove an app's grant for an API. Its next call after the change commits is refused.`,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, _, ok := fsm.SplitAPIRef(args[1]); !ok {
				return fmt.Errorf("%q is not GROUP/API", args[1])
			}
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			if err := c.Do(ctx, "DELETE", "/v1/grants/"+args[0]+"/"+args[1], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s on %s\n", args[0], args[1])
			return nil
		},
	}
	return clientCommand(cmd)
}

func appCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app rotate|disable|enable NAME",
		Short: "Rotate an app's secret, or disable or enable the app",
		Long: `rotate: give the app a new secret (generated, or --secret); the previous secret stays
live beside it so clients switch without a failed call, and the one before stops.
disable / enable: refuse or accept the app's calls (Invalid AppKey while disabled).`,
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"rotate", "disable", "enable"},
	}
	var secret string
	cmd.Flags().StringVar(&secret, "secret", "", "with rotate: the new secret (16+ characters); default generated")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		action, name := args[0], args[1]
		c, err := adminClient(cmd)
		if err != nil {
			return err
		}
		ctx, cancel := ctxTimeout()
		defer cancel()
		var app fsm.App
		switch action {
		case "rotate":
			err = c.Do(ctx, "POST", "/v1/apps/"+name+"/rotate", node.RotateRequest{Secret: secret}, &app)
		case "disable", "enable":
			err = c.Do(ctx, "POST", "/v1/apps/"+name+"/"+action, nil, &app)
		default:
			return fmt.Errorf("app %q: want rotate, disable or enable", action)
		}
		if err != nil {
			return err
		}
		if action == "rotate" {
			fmt.Fprintf(cmd.OutOrStdout(), "app %s: new secret %s (the previous one stays live until the next rotation)\n", name, app.Secrets[0])
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "app %s %sd\n", name, action)
		}
		return nil
	}
	return clientCommand(cmd)
}
