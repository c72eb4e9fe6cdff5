package ratelimit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sharedStore opens a store on the shared file path, closed when the test ends.
func sharedStore(t *testing.T, path string, maxEntries int) *NonceStore {
	t.Helper()
	s, err := NewNonceStore(NonceConfig{SharedFile: path, MaxEntries: maxEntries})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestSharedNonceFileAcrossStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nonces")
	a := sharedStore(t, path, 10_000)
	b := sharedStore(t, path, 10_000)
	now := time.Now()
	for i := range 3000 {
		n := []byte("nonce-" + strconv.Itoa(i))
		if !a.Use(n, now) {
			t.Fatalf("nonce %d refused on first use", i)
		}
		if b.Use(n, now) {
			t.Fatalf("nonce %d used on a was fresh on b", i)
		}
		if !b.Seen(n, now) {
			t.Fatalf("nonce %d used on a not seen on b", i)
		}
	}
	if a.Len() != 3000 || b.Len() != 3000 {
		t.Fatalf("len a=%d b=%d, want 3000 each", a.Len(), b.Len())
	}
	// The counters are the file's: both stores see both stores' counts.
	got := a.sum(func(sh *nonceShard) uint64 { return sh.refused })()
	if got != 3000 {
		t.Fatalf("refused counted %v, want 3000 (b's refusals, seen from a)", got)
	}
	// Expiry is the file's too: after the TTL both may use the nonce again.
	later := now.Add(16 * time.Minute)
	if !b.Use([]byte("nonce-1"), later) {
		t.Fatal("nonce refused after its TTL")
	}
	if a.Use([]byte("nonce-1"), later) {
		t.Fatal("nonce reused after its TTL was fresh twice")
	}
}

func TestSharedNonceFileRefusesAMismatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nonces")
	sharedStore(t, path, 10_000)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewNonceStore(NonceConfig{SharedFile: path, MaxEntries: 1_000_000})
	if err == nil || !strings.Contains(err.Error(), "slots a shard") || !strings.Contains(err.Error(), path) {
		t.Fatalf("a file sized for other MaxEntries: err %v, want one naming the file and the sizes", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("a refused open changed the file")
	}
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("x"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewNonceStore(NonceConfig{SharedFile: junk}); err == nil || !strings.Contains(err.Error(), "not a Tollgate nonce table") {
		t.Fatalf("a file of something else: err %v", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("TGNONCE1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewNonceStore(NonceConfig{SharedFile: short}); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("a truncated file: err %v", err)
	}
}

// helperEnv makes the test binary, run by TestSharedNonceFileAcrossProcesses, use
// nonces from a shared file instead of testing.
const helperEnv = "TOLLGATE_NONCE_HELPER"

// TestSharedNonceFileAcrossProcesses: two processes use the same 20,000 nonces at
// once, four goroutines each, in opposite orders so they meet on every shard. Each
// nonce must be fresh exactly once across both.
func TestSharedNonceFileAcrossProcesses(t *testing.T) {
	if spec := os.Getenv(helperEnv); spec != "" {
		useFromHelper(spec)
		return
	}
	const total = 20_000
	path := filepath.Join(t.TempDir(), "nonces")
	mine := sharedStore(t, path, 100_000)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSharedNonceFileAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,reverse", helperEnv, path, total))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fresh := useAll(mine, total, false)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("helper did not finish in 60 s\n%s", out.String())
	}
	var theirs int
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "fresh "); ok {
			theirs, _ = strconv.Atoi(v)
		}
	}
	if fresh+theirs != total {
		t.Fatalf("fresh here %d + in the helper %d = %d, want exactly %d\n%s", fresh, theirs, fresh+theirs, total, out.String())
	}
	if theirs == 0 || fresh == 0 {
		t.Logf("one process took every nonce (here %d, helper %d): they did not overlap this time", fresh, theirs)
	}
	if n := mine.Len(); n != total {
		t.Fatalf("the file holds %d nonces, want %d", n, total)
	}
}

func useFromHelper(spec string) {
	parts := strings.Split(spec, ",")
	total, _ := strconv.Atoi(parts[1])
	s, err := NewNonceStore(NonceConfig{SharedFile: parts[0], MaxEntries: 100_000})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Printf("fresh %d\n", useAll(s, total, parts[2] == "reverse"))
}

// useAll uses nonces 0..total-1 from four goroutines and returns how many were fresh.
func useAll(s *NonceStore, total int, reverse bool) int {
	var mu sync.Mutex
	fresh := 0
	var wg sync.WaitGroup
	now := time.Now()
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := g; i < total; i += 4 {
				k := i
				if reverse {
					k = total - 1 - i
				}
				if s.Use([]byte("shared-"+strconv.Itoa(k)), now) {
					n++
				}
			}
			mu.Lock()
			fresh += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	return fresh
}

// TestSharedNonceFileTakesOverADeadHoldersShard: a process killed inside a shard
// leaves its pid in the lock; the next store to need the shard takes it over.
func TestSharedNonceFileTakesOverADeadHoldersShard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nonces")
	s := sharedStore(t, path, 10_000)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	n := []byte("held")
	d := nonceDigest(n)
	s.shards[d[0]%nonceShards].shm.lock.Store(uint32(dead.Process.Pid))
	start := time.Now()
	if !s.Use(n, time.Now()) {
		t.Fatal("nonce refused")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v to take over a dead holder's shard", took)
	}
	if s.Use(n, time.Now()) {
		t.Fatal("nonce fresh twice after the takeover")
	}
}

// TestSharedNonceFileCountsWhatItCannotQueue: with a gossiping store wanting nonces but
// not taking them, a shard's queue fills; the nonces beyond it are still refused here
// but counted as never sent.
func TestSharedNonceFileCountsWhatItCannotQueue(t *testing.T) {
	s := sharedStore(t, filepath.Join(t.TempDir(), "nonces"), 100_000)
	s.shm.hdr.wanted.Add(1) // as a store with peers would
	used := 0
	for i := 0; used < shmPendingCap+40; i++ {
		n := []byte("queued-" + strconv.Itoa(i))
		if d := nonceDigest(n); d[0]%nonceShards != 0 {
			continue
		}
		if !s.Use(n, time.Now()) {
			t.Fatalf("nonce %d refused on first use", i)
		}
		used++
	}
	if got := s.sum(func(sh *nonceShard) uint64 { return sh.shm.dropped })(); got != 40 {
		t.Fatalf("%v nonces counted unsent, want 40 (a queue holds %d)", got, shmPendingCap)
	}
	var q []byte
	s.lock(&s.shards[0])
	q = s.drain(&s.shards[0], q)
	s.unlock(&s.shards[0])
	if len(q) != shmPendingCap*digestLen {
		t.Fatalf("the queue held %d digests, want %d", len(q)/digestLen, shmPendingCap)
	}
}

// TestSharedNonceFileCarriesTheHorizon: a horizon set in one process is every
// process's (the node sets it, its workers check calls against it), and a file that
// already held a table reports it was kept, so its node lost no nonce in a crash.
func TestSharedNonceFileCarriesTheHorizon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nonces")
	a := sharedStore(t, path, 10_000)
	if a.Kept() {
		t.Error("a new file reported kept")
	}
	b := sharedStore(t, path, 10_000)
	if !b.Kept() {
		t.Error("a file that held a table reported new")
	}
	if b.HorizonMillis() != 0 {
		t.Fatalf("horizon %d before any was set", b.HorizonMillis())
	}
	h := time.UnixMilli(1_800_000_000_123)
	a.SetHorizon(h)
	if got := b.HorizonMillis(); got != h.UnixMilli() {
		t.Fatalf("horizon seen by the other store: %d, want %d", got, h.UnixMilli())
	}
	alone, err := NewNonceStore(NonceConfig{MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	alone.SetHorizon(h)
	if alone.HorizonMillis() != h.UnixMilli() || alone.Kept() {
		t.Fatalf("a store in memory: horizon %d kept %v", alone.HorizonMillis(), alone.Kept())
	}
}
