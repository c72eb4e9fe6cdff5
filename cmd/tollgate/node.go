package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/node"
)

func nodeCommand() *cobra.Command {
	cfg := node.Defaults()
	var join string
	var logLevel string
	var gossipKey string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a Tollgate node",
		Long: `Run a Tollgate node. With no flags: a one-node cluster in ./tollgate-data, the data
plane on :8080, the admin API on 127.0.0.1:9080, raft on 127.0.0.1:7000, gossip on
127.0.0.1:7946, base domain localhost (group g is reached at g.localhost:8080).

The admin token is $TOLLGATE_ADMIN_TOKEN, or generated on first start into
DATA/admin-token. SIGTERM or SIGINT drains the node and stops it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %v", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.RaftLog = os.Stderr
			cfg.AdminToken = os.Getenv("TOLLGATE_ADMIN_TOKEN")
			if gossipKey == "" {
				gossipKey = os.Getenv("TOLLGATE_GOSSIP_KEY")
			}
			if gossipKey != "" {
				key, err := base64.StdEncoding.DecodeString(gossipKey)
				if err != nil {
					return fmt.Errorf("gossip key: not base64: %v", err)
				}
				cfg.GossipKey = key
			}
			for _, a := range strings.Split(join, ",") {
				if a = strings.TrimSpace(a); a != "" {
					cfg.Join = append(cfg.Join, a)
				}
			}
			n, err := node.Start(cfg)
			if err != nil {
				return err
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			s := <-sig
			cfg.Logger.Info("draining", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return n.Close(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory (raft log, snapshots, node id, admin token)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "data plane address")
	f.StringVar(&cfg.TLSListen, "tls-listen", "", "TLS data plane address (certificates from the replicated state, chosen by SNI); off by default")
	f.StringVar(&cfg.Admin, "admin", cfg.Admin, "admin API address (also /healthz, /readyz, /metrics)")
	f.StringVar(&cfg.Raft, "raft", cfg.Raft, "raft address (host:port other nodes can reach)")
	f.StringVar(&cfg.Gossip, "gossip", cfg.Gossip, "gossip address (host:port other nodes can reach)")
	f.StringVar(&cfg.BaseDomain, "base-domain", cfg.BaseDomain, "base domain: group g is reached at g.<base-domain>")
	f.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "node id: 1 to 128 letters, digits, '.', '-' or '_' (default: stored in the data dir, or generated from the host name)")
	f.StringVar(&join, "join", "", "gossip address(es) of cluster members to join, comma-separated")
	f.IntVar(&cfg.MaxBodySize, "max-body", cfg.MaxBodySize, "largest request body the data plane accepts, in bytes")
	f.IntVar(&cfg.NonceCapacity, "nonce-capacity", 0, "used nonces remembered over the 15-minute signature window (default 4000000, rounded up to 6.3M in 168 MB, about 27 bytes each): a node takes at most this many signed calls per window, 7,000 a second sustained at the default; beyond it signed calls are refused (A400NU) until old nonces expire")
	f.StringVar(&cfg.NonceFile, "nonce-file", "", "file (on tmpfs, e.g. /dev/shm/tollgate-nonces) holding the nonce table, shared with the other nodes on this host that name it: a nonce used on one is refused on all at once; they need the same --nonce-capacity")
	f.IntVar(&cfg.Workers, "workers", defaultWorkers(), "data plane worker processes of one CPU thread each (GOMAXPROCS=1) on the node's listeners; one per CPU keeps each connection on its CPU, the lowest CPU per request; 0 serves in the node's own process; the default is one per CPU the Go runtime may use (GOMAXPROCS), none on one CPU")
	f.BoolVar(&cfg.Netpoller, "netpoller", false, "serve and dial the data plane through Go's netpoller instead of Tollgate's own epoll poller: about 10 µs less per request when connections come one at a time, about 5% more CPU per request under load")
	f.BoolVar(&cfg.PinWorkers, "pin-workers", cfg.PinWorkers, "with one worker per CPU the node may use, run worker i on the i-th of them, so the kernel never moves it (--pin-workers=false lets it)")
	f.Int64Var(&cfg.SubdomainDailyLimit, "subdomain-daily-limit", cfg.SubdomainDailyLimit, "calls a day each group takes on its default subdomain <group>.<base-domain> (custom domains are not capped); 0: no cap")
	f.StringSliceVar(&cfg.TrustedProxies, "trusted-proxies", nil, "proxies (CIDRs or addresses) whose X-Forwarded-For names the client, comma-separated")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&gossipKey, "gossip-key", "", "base64 key (16, 24 or 32 bytes) encrypting gossip; default $TOLLGATE_GOSSIP_KEY")
	f.IntVar(&cfg.MaxVoters, "max-voters", 5, "raft voters at most; more members join as non-voters")
	f.DurationVar(&cfg.DeadGrace, "dead-grace", 30*time.Second, "how long a dead member stays in raft before the leader removes it")
	f.StringVar(&cfg.RaftTLSCA, "raft-tls-ca", "", "PEM file of the CA that signs every node's raft certificate; with --raft-tls-cert and --raft-tls-key, raft runs over mutual TLS")
	f.StringVar(&cfg.RaftTLSCert, "raft-tls-cert", "", "PEM file of this node's raft certificate (signed by --raft-tls-ca)")
	f.StringVar(&cfg.RaftTLSKey, "raft-tls-key", "", "PEM file of this node's raft private key")
	f.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "how often raft checks whether to snapshot its state and compact its log")
	f.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", cfg.SnapshotThreshold, "raft snapshots once this many entries were added since the last snapshot")
	f.Uint64Var(&cfg.TrailingLogs, "trailing-logs", cfg.TrailingLogs, "log entries kept after a snapshot, for followers a little behind")
	f.DurationVar(&cfg.ProvisionalWait, "provisional-wait", cfg.ProvisionalWait, "a node restarted with no leader in sight serves its own snapshot and log after this long (marked stale); negative: never")
	return cmd
}

// workerCommand is what a node with --workers starts, once per worker; not for people.
func workerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "worker",
		Short:  "A data plane worker of a node with --workers (started by the node)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// A terminal's Ctrl-C or a service manager's SIGTERM reaches the whole process
			// group: the node drains its workers itself, and a worker whose node is gone
			// stops on its own.
			signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
			return node.RunWorker()
		},
	}
}

// defaultWorkers is --workers unless set: a worker per CPU the runtime may use
// (GOMAXPROCS, which follows a container's CPU limit), as nginx's worker_processes
// auto does; under the bench's full scenario it measured 1.27–1.38x nginx's CPU per
// request against 1.33–1.63x in one process, and p99 within 0.5 ms of nginx's
// against 1.2–1.6 ms above (README, "Where we stand against the gate"). On one CPU a worker
// would only add the hop between it and the node, so the node serves itself.
func defaultWorkers() int {
	if n := runtime.GOMAXPROCS(0); n > 1 {
		return n
	}
	return 0
}
