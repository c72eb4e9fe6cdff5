package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/node"
)

func applyCommand() *cobra.Command {
	var file string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the cluster's configuration match a declarative file",
		Long: `Make the cluster's configuration match a declarative YAML file: groups, APIs and
their stages, apps, grants, traffic policies, backend keys. Prints what changed
(created / changed / deleted / deployed). The file applies whole or not at all: on any
error the command names the file, line and field, exits non-zero and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return errors.New("apply needs -f FILE")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			b, err := config.Parse(file, data)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return exitError{2}
			}
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			res, err := c.Apply(ctx, b, dryRun)
			if err != nil {
				var ae *node.APIError
				if errors.As(err, &ae) && len(ae.Fields) > 0 {
					for _, f := range ae.Fields {
						fmt.Fprintf(os.Stderr, "%s:%d: %s: %s\n", file, config.Locate(data, f.Path), f.Path, f.Message)
					}
					return exitError{2}
				}
				return err
			}
			out := cmd.OutOrStdout()
			if res.Plan.Empty() {
				fmt.Fprintln(out, "no changes")
				return nil
			}
			for _, c := range res.Plan.Changes {
				fmt.Fprintln(out, c.String())
			}
			if dryRun {
				fmt.Fprintf(out, "dry run: %d change(s) planned, nothing applied\n", len(res.Plan.Changes))
			} else {
				fmt.Fprintf(out, "applied: %d change(s), state index %d\n", len(res.Plan.Changes), res.Index)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "declarative YAML file")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan only")
	return clientCommand(cmd)
}

// stageCommand builds deploy, undeploy and rollback, which share their shape.
func stageCommand(action, short, long string, withVersion bool) *cobra.Command {
	var stage, note string
	var version int
	cmd := &cobra.Command{
		Use:   action + " GROUP/API --stage STAGE",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if _, _, ok := fsm.SplitAPIRef(ref); !ok {
				return fmt.Errorf("%q is not GROUP/API", ref)
			}
			st, err := fsm.ParseStage(stage)
			if err != nil {
				return fmt.Errorf("--stage: %v", err)
			}
			if withVersion && version < 1 {
				return errors.New("rollback needs --to VERSION (see tollgate history)")
			}
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			res, err := c.StageAction(ctx, action, ref, node.StageRequest{Stage: string(st), Note: note, Version: version})
			if err != nil {
				return err
			}
			switch action {
			case "undeploy":
				fmt.Fprintf(cmd.OutOrStdout(), "%s undeployed from %s\n", ref, st)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "%s serves version %d in %s\n", ref, res.Version, st)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stage, "stage", "", "stage: TEST, PRE or RELEASE")
	cmd.MarkFlagRequired("stage")
	if action == "deploy" {
		cmd.Flags().StringVar(&note, "note", "", "a note kept with the version")
	}
	if withVersion {
		cmd.Flags().IntVar(&version, "to", 0, "version to make current")
	}
	return clientCommand(cmd)
}

func deployCommand() *cobra.Command {
	return stageCommand("deploy", "Deploy an API's current definition to a stage as a new version",
		`Freeze the API's current definition as a new immutable version and serve it in the
stage at once, on every node.`, false)
}

func undeployCommand() *cobra.Command {
	return stageCommand("undeploy", "Stop serving an API in a stage",
		`Stop serving the API in the stage. Its version history stays, so a rollback can serve
an old version again.`, false)
}

func rollbackCommand() *cobra.Command {
	return stageCommand("rollback", "Serve an earlier version of an API in a stage",
		`Make an earlier version (see tollgate history) current in the stage, at once, on every
node. No new version is made.`, true)
}

func historyCommand() *cobra.Command {
	var stage string
	cmd := &cobra.Command{
		Use:   "history GROUP/API --stage STAGE",
		Short: "List an API's versions in a stage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := fsm.ParseStage(stage)
			if err != nil {
				return fmt.Errorf("--stage: %v", err)
			}
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			h, err := c.History(ctx, args[0], st)
			if err != nil {
				return err
			}
			if clientOpts.output == "json" {
				return printJSON(cmd.OutOrStdout(), h)
			}
			var rows [][]string
			for i := len(h.Versions) - 1; i >= 0; i-- {
				v := h.Versions[i]
				cur := ""
				if v.Number == h.Current {
					cur = "*"
				}
				rows = append(rows, []string{cur, strconv.Itoa(v.Number), v.DeployedAt.Format("2006-01-02T15:04:05Z"),
					v.Def.Method + " " + v.Def.Path, backendLabel(v.Def.Backend), v.Note})
			}
			table(cmd.OutOrStdout(), []string{"", "VERSION", "DEPLOYED", "ROUTE", "BACKEND", "NOTE"}, rows)
			if h.Current == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "(%s is not deployed in %s)\n", args[0], st)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stage, "stage", "", "stage: TEST, PRE or RELEASE")
	cmd.MarkFlagRequired("stage")
	addOutputFlag(cmd)
	return clientCommand(cmd)
}

func backendLabel(b fsm.Backend) string {
	if b.Type == fsm.BackendMock {
		return fmt.Sprintf("mock %d", b.Status)
	}
	return b.URL + b.Path
}

func getCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get apps|apis|groups|grants [NAME]",
		Short: "Show what the cluster holds",
		Long: `Show apps, APIs, groups or grants, as a table or with -o json. An app's key and secret
are included (the admin token is the owner's). NAME filters: an app or group name, or
GROUP/API for apis.`,
		Args:      cobra.RangeArgs(1, 2),
		ValidArgs: []string{"apps", "apis", "groups", "grants"},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			out := cmd.OutOrStdout()
			js := clientOpts.output == "json"
			switch args[0] {
			case "apps", "app":
				apps, err := getOneOrAll[fsm.App](ctx, c, "/v1/apps", name)
				if err != nil {
					return err
				}
				if js {
					return printJSON(out, apps)
				}
				var rows [][]string
				for _, a := range apps {
					state := "enabled"
					if a.Disabled {
						state = "disabled"
					}
					secret := ""
					if len(a.Secrets) > 0 {
						secret = a.Secrets[0]
					}
					rows = append(rows, []string{a.Name, a.Owner, a.Key, secret, a.Code, state})
				}
				table(out, []string{"NAME", "OWNER", "KEY", "SECRET", "CODE", "STATE"}, rows)
			case "apis", "api":
				var apis []node.APIView
				path := "/v1/apis"
				if name != "" {
					if _, _, ok := fsm.SplitAPIRef(name); ok {
						var a node.APIView
						if err := c.Do(ctx, "GET", "/v1/apis/"+name, nil, &a); err != nil {
							return err
						}
						apis = []node.APIView{a}
						break
					}
					path += "?group=" + name
				}
				if apis == nil {
					if err := c.Do(ctx, "GET", path, nil, &apis); err != nil {
						return err
					}
				}
				if js {
					return printJSON(out, apis)
				}
				var rows [][]string
				for _, a := range apis {
					var stages []string
					for _, st := range fsm.Stages {
						if v, ok := a.Stages[st]; ok && v.Current > 0 {
							stages = append(stages, fmt.Sprintf("%s:v%d", st, v.Current))
						}
					}
					rows = append(rows, []string{a.Ref(), a.Def.Method, a.Def.Path, a.Def.Auth, backendLabel(a.Def.Backend), strings.Join(stages, " ")})
				}
				table(out, []string{"API", "METHOD", "PATH", "AUTH", "BACKEND", "DEPLOYED"}, rows)
			case "groups", "group":
				groups, err := getOneOrAll[fsm.Group](ctx, c, "/v1/groups", name)
				if err != nil {
					return err
				}
				if js {
					return printJSON(out, groups)
				}
				var rows [][]string
				for _, g := range groups {
					rows = append(rows, []string{g.Name, strings.Join(g.Domains, ","), g.Description})
				}
				table(out, []string{"NAME", "DOMAINS", "DESCRIPTION"}, rows)
			case "grants", "grant":
				var grants []fsm.GrantSpec
				path := "/v1/grants"
				if name != "" {
					path += "?app=" + name
				}
				if err := c.Do(ctx, "GET", path, nil, &grants); err != nil {
					return err
				}
				if js {
					return printJSON(out, grants)
				}
				var rows [][]string
				for _, g := range grants {
					stages := make([]string, len(g.Stages))
					for i, s := range g.Stages {
						stages[i] = string(s)
					}
					exp := "never"
					if g.Expires != nil {
						exp = g.Expires.UTC().Format("2006-01-02T15:04:05Z")
					}
					rows = append(rows, []string{g.App, g.API, strings.Join(stages, ","), exp})
				}
				table(out, []string{"APP", "API", "STAGES", "EXPIRES"}, rows)
			default:
				return fmt.Errorf("get %q: want apps, apis, groups or grants", args[0])
			}
			return nil
		},
	}
	addOutputFlag(cmd)
	return clientCommand(cmd)
}

// getOneOrAll lists a collection, or fetches one member of it when name is set.
func getOneOrAll[T any](ctx context.Context, c *node.Client, collection, name string) ([]T, error) {
	if name == "" {
		var all []T
		return all, c.Do(ctx, "GET", collection, nil, &all)
	}
	var one T
	if err := c.Do(ctx, "GET", collection+"/"+name, nil, &one); err != nil {
		return nil, err
	}
	return []T{one}, nil
}

func membersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members with their role, raft and gossip addresses, state and applied index",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			var ms []node.Member
			if err := c.Do(ctx, "GET", "/v1/members", nil, &ms); err != nil {
				return err
			}
			if clientOpts.output == "json" {
				return printJSON(cmd.OutOrStdout(), ms)
			}
			sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
			var rows [][]string
			for _, m := range ms {
				idx := ""
				if m.AppliedIndex > 0 {
					idx = strconv.FormatUint(m.AppliedIndex, 10)
				}
				rows = append(rows, []string{m.ID, m.Role, m.Address, m.Gossip, m.State, idx})
			}
			table(cmd.OutOrStdout(), []string{"ID", "ROLE", "RAFT ADDRESS", "GOSSIP ADDRESS", "STATE", "APPLIED"}, rows)
			return nil
		},
	}
	addOutputFlag(cmd)
	return clientCommand(cmd)
}

// version is set at build time with -ldflags "-X main.version=..."; otherwise the
// module's build info names it.
var version = ""

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			v := version
			info, ok := debug.ReadBuildInfo()
			if v == "" && ok {
				v = info.Main.Version
			}
			if v == "" {
				v = "(devel)"
			}
			goVersion := ""
			if ok {
				goVersion = info.GoVersion
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tollgate %s %s\n", v, goVersion)
		},
	}
}
