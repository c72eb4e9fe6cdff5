package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant figures.
const (
	histMin    = 1
	histMax    = 60_000_000
	histSigFig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigFig) }

// loadSpec is one closed-loop segment: conns connections spread round-robin
// over addrs, each with one outstanding request, warm-up then measurement.
type loadSpec struct {
	addrs    []string
	conns    int
	warmup   time.Duration
	duration time.Duration
	timeout  time.Duration // per request
	build    func(conn int) buildFunc
	// onMeasure runs when measurement starts and ends (CPU sampling).
	onStart, onEnd func()
	// progress is called about twice a second with the measured count so far.
	progress func(elapsed time.Duration, n int64)
}

// loadResult is what one segment measured.
type loadResult struct {
	Requests int64
	Seconds  float64
	Errors   int64 // transport errors (the connection is re-dialled)
	BadCode  int64 // answers other than 200
	BadBody  int64 // 200 answers of the wrong length
	hist     *hdrhistogram.Histogram
}

type worker struct {
	hist    *hdrhistogram.Histogram
	n       int64
	errs    int64
	badCode int64
	badBody int64
}

// errTooManyErrors ends a segment whose target keeps failing.
var errTooManyErrors = errors.New("too many transport errors")

// runLoad runs one segment and blocks until every connection is closed.
func runLoad(ctx context.Context, s loadSpec, wantBody int) (loadResult, error) {
	if s.timeout == 0 {
		s.timeout = 10 * time.Second
	}
	var recording, stop atomic.Bool
	var live, transportErrs atomic.Int64
	workers := make([]*worker, s.conns)
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		connsMu.Lock()
		if add {
			open[c] = true
		} else {
			delete(open, c)
		}
		connsMu.Unlock()
	}
	for i := range workers {
		w := &worker{hist: newHist()}
		workers[i] = w
		build := s.build(i)
		addr := s.addrs[i%len(s.addrs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			var bw *bufio.Writer
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			closeConn := func() {
				if conn != nil {
					track(conn, false)
					conn.Close()
					conn = nil
				}
			}
			defer closeConn()
			for !stop.Load() && ctx.Err() == nil {
				if conn == nil {
					c, err := net.DialTimeout("tcp", addr, 2*time.Second)
					if err != nil {
						w.errs++
						if transportErrs.Add(1) > 1000 {
							return
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conn = c
					track(c, true)
					if stop.Load() {
						return
					}
					br = bufio.NewReaderSize(c, 16<<10)
					bw = bufio.NewWriterSize(c, 4<<10)
				}
				req.Reset()
				build(req)
				start := time.Now()
				_ = conn.SetDeadline(start.Add(s.timeout))
				err := req.Write(bw)
				if err == nil {
					err = bw.Flush()
				}
				if err == nil {
					resp.Reset()
					err = resp.Read(br)
				}
				lat := time.Since(start)
				if err != nil {
					if stop.Load() {
						return
					}
					closeConn()
					w.errs++
					if transportErrs.Add(1) > 1000 {
						return
					}
					continue
				}
				if recording.Load() {
					_ = w.hist.RecordValue(max(lat.Microseconds(), 1))
					w.n++
					live.Add(1)
					switch {
					case resp.StatusCode() != fasthttp.StatusOK:
						w.badCode++
					case wantBody > 0 && len(resp.Body()) != wantBody:
						w.badBody++
					}
				}
				if resp.ConnectionClose() {
					closeConn()
				}
			}
		}()
	}

	finish := func() {
		stop.Store(true)
		// Unblock workers waiting on a slow target.
		connsMu.Lock()
		for c := range open {
			_ = c.SetDeadline(time.Now())
		}
		connsMu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(s.timeout + 5*time.Second):
		}
	}

	if err := sleepCtx(ctx, s.warmup); err != nil {
		finish()
		return loadResult{}, err
	}
	if s.onStart != nil {
		s.onStart()
	}
	recording.Store(true)
	t0 := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	end := time.NewTimer(s.duration)
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		case <-end.C:
			break loop
		case <-tick.C:
			if s.progress != nil {
				s.progress(time.Since(t0), live.Load())
			}
			if transportErrs.Load() > 1000 {
				err = errTooManyErrors
				break loop
			}
		}
	}
	recording.Store(false)
	elapsed := time.Since(t0)
	tick.Stop()
	end.Stop()
	if s.onEnd != nil {
		s.onEnd()
	}
	finish()

	res := loadResult{Seconds: elapsed.Seconds(), hist: newHist()}
	for _, w := range workers {
		res.hist.Merge(w.hist)
		res.Requests += w.n
		res.Errors += w.errs
		res.BadCode += w.badCode
		res.BadBody += w.badBody
	}
	if err == nil && res.Requests == 0 {
		err = fmt.Errorf("no answer from %s in %v (%d transport errors)", strings.Join(s.addrs, ","), s.duration, res.Errors)
	}
	return res, err
}

// probe sends one request built by build to addr and returns the answer's
// status, error code header and body length.
func probe(addr string, build buildFunc) (status int, code string, body []byte, err error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	build(req)
	c := &fasthttp.HostClient{Addr: addr}
	if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
		return 0, "", nil, err
	}
	code = string(resp.Header.Peek("X-Ca-Error-Code"))
	if m := resp.Header.Peek("X-Ca-Error-Message"); len(m) > 0 {
		code += " " + string(m)
	}
	return resp.StatusCode(), code, append([]byte(nil), resp.Body()...), nil
}
