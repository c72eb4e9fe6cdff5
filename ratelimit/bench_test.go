package ratelimit

import (
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func benchLimiter(b *testing.B) *Limiter {
	l, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Day, API: 1 << 60, App: 1 << 60, User: 1 << 60}}); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkAllow is the quota check of a compiled route on one core.
func BenchmarkAllow(b *testing.B) {
	l := benchLimiter(b)
	h := l.Handle("p", DimAPI, "weather/city", true)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(h, now)
	}
}

// BenchmarkAllowParallel is the same check from every core on one hot key, the worst
// case for contention (all cores hit one counter's cache line).
func BenchmarkAllowParallel(b *testing.B) {
	l := benchLimiter(b)
	h := l.Handle("p", DimAPI, "weather/city", true)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(h, now)
		}
	})
}

// BenchmarkHandleAndAllowApp resolves a request-time key (the app after auth) and
// checks it, as the proxy does per request.
func BenchmarkHandleAndAllowApp(b *testing.B) {
	l := benchLimiter(b)
	apps := make([]string, 1000)
	for i := range apps {
		apps[i] = "app-" + strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(l.Handle("p", DimApp, apps[i%len(apps)], false), now)
		i++
	}
}

// BenchmarkHandleParallel resolves the same three keys from every core, as the
// proxy does for one API, app and user under load: lookups that share a shard.
func BenchmarkHandleParallel(b *testing.B) {
	l := benchLimiter(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.HandleScoped("p", DimAPI, "weather/city@RELEASE", "", false)
			l.HandleScoped("p", DimApp, "mobile", "weather/city@RELEASE", false)
			l.HandleScoped("p", DimUser, "ann", "weather/city@RELEASE", false)
		}
	})
}

// BenchmarkMemoryPerMillionKeys creates a million keys, each used once in the current
// window with counts from two peers (a 3-node cluster), and reports the heap they take.
func BenchmarkMemoryPerMillionKeys(b *testing.B) {
	const keys = 1_000_000
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l := benchLimiter(b)
		now := time.Now()
		idx := Day.index(now.Unix())
		b.StartTimer()
		for i := range keys {
			subject := "user-" + strconv.Itoa(i)
			c := l.Handle("p", DimUser, subject, false)
			l.Allow(c, now)
			l.merge(11, 1, entry{key: c.key, w: Day, idx: idx, count: 3, ceil: 5})
			l.merge(12, 1, entry{key: c.key, w: Day, idx: idx, count: 4, ceil: 6})
		}
		b.StopTimer()
		l.Close()    // flushes once: drains the dirty list
		runtime.GC() // what stays is the keys
		runtime.ReadMemStats(&after)
		if l.Keys() != keys {
			b.Fatalf("keys = %d", l.Keys())
		}
		per := float64(after.HeapAlloc-before.HeapAlloc) / keys
		b.ReportMetric(per, "B/key")
		b.ReportMetric(per*keys/(1<<20), "MiB/1Mkeys")
		runtime.KeepAlive(l)
		b.StartTimer()
	}
}

// BenchmarkNonceUse: a fresh nonce each call, in the process's own table and in a
// shared file (the file's lock on top of the shard's mutex).
func BenchmarkNonceUse(b *testing.B) {
	for _, shared := range []bool{false, true} {
		name := "own"
		cfg := NonceConfig{MaxEntries: 1 << 22}
		if shared {
			name, cfg.SharedFile = "shared", shmPath(b)
		}
		b.Run(name, func(b *testing.B) {
			s, err := NewNonceStore(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := time.Now()
			var nonce [16]byte
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				binary.LittleEndian.PutUint64(nonce[:], uint64(i))
				s.Use(nonce[:], now)
			}
		})
	}
}

// shmPath names a shared nonce file on tmpfs when the host has /dev/shm (as a node
// would use it), else in the test's temporary directory.
func shmPath(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "tollgate-bench-")
	if err != nil {
		return b.TempDir() + "/nonces"
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir + "/nonces"
}
