// Command bench measures Tollgate against the same fixed backend called
// directly, through nginx and through a bare fasthttp reverse proxy, in one
// run, so that every figure it prints is a ratio measured on the same machine
// at the same time.
//
// Usage, from the repository root:
//
//	go run ./bench                      # every scenario, 3 rounds × 5 s per target
//	go run ./bench -quick               # a short smoke run (CI)
//	go run ./bench -scenarios anon -targets direct,nginx,tollgate
//	go run ./bench -profile             # also write Tollgate CPU and heap profiles
//	go run ./bench -scenarios full -targets nginx,tollgate -tollgate-bin A -compare-bin B
//	                                    # an A/B of two node builds in the same rounds
//
// What it starts, each as a child process in its own process group (stopped on
// exit, error or Ctrl-C):
//
//   - backend: a fasthttp server (this binary re-executed) answering a 64-byte
//     JSON body on every path and a 4 KiB body on paths ending in /4k;
//   - nginx: nginx -p TMP -g 'daemon off;' with a generated proxy_pass config
//     (upstream keep-alive, access_log off, worker_processes 2); a run without
//     nginx says so and reports the rest;
//   - bareproxy: a reverse proxy of a few dozen lines on fasthttp.HostClient
//     (this binary re-executed; see bareproxy.go), the floor our pipeline is
//     measured against;
//   - tollgate: `tollgate node` built from ./cmd/tollgate on free ports with a
//     temporary data directory; each scenario applies its own declarative file
//     with `tollgate apply -f`; tollgate-workers, the same node with its data
//     plane in one worker process per CPU (--workers); tollgate-3, three such
//     nodes (in-process data planes) as one cluster;
//   - tollgate-percpu (only when named in -targets): one single-P node per CPU,
//     not clustered, the experiment that preceded --workers;
//   - bareloop (only when named in -targets): one single-threaded epoll loop per
//     CPU, the floor of a Go proxy that reads a socket only when epoll says it is
//     readable, as nginx does (see bareloop_linux.go).
//
// The load generator is closed-loop: -conns connections, each with exactly one
// outstanding request, written and read on a raw connection with
// fasthttp.Request/Response. A scenario builds every request through a
// per-connection function, so a request can carry a fresh nonce and signature.
// Each (round, target) segment warms up, then records latencies into HDR
// histograms for -duration; rounds alternate between targets (rotating their
// order) so that the machine's drift cancels in the ratios. CPU time of the
// target's processes (and of their children, such as nginx workers) is read from
// /proc before and after each segment, user and system apart: the "kernel %"
// column is the system share, what no change to the pipeline's own code can cut.
// "CPU ×nginx" divides the run's sums; the column after it takes the ratio round by
// round and reports the median, which a slow spell spanning one round leaves alone.
//
// On a VM the host may run its vCPUs on cores that share a cache or on cores that
// do not, and switch between the two within seconds; a Go server pays for the far
// placement much more than nginx. So while segments run, two threads pinned to the
// first two CPUs time a cache line's round trip between them four times a second
// (crosscpu.go), each segment records what they saw, and a second table gives the
// ratios to nginx over the rounds run wholly near and wholly far.
//
// Output: a progress line on stderr, a markdown table on stdout, and under
// bench/results/ a timestamped JSON file, latest.json, latest.md and latest.svg.
// A run with the full scenario and nginx also judges issue 7's gate (gate.go): met,
// not met, or at the line when the CPU ratio's 90% interval over the rounds spans it.
//
// Scenarios live in one table (scenarios.go): a name, what the Tollgate file
// must declare, and how to build a request. Adding one is adding an entry.
package main
