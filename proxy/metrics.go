package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the data plane's Prometheus series.
//
// Cardinality is bounded by the configuration, never by traffic: requests and bytes are
// labelled by group, API and stage (and status class), each a finite set from the FSM;
// latency histograms are labelled by group and stage only, because a histogram costs a
// dozen series and per-API histograms would multiply a 10,000-API group by that.
// Requests that match no route count under api="" (and group="" when the Host names no
// group).
type metrics struct {
	requests *prometheus.CounterVec   // group, api, stage, class
	bytesOut *prometheus.CounterVec   // group, api, stage
	total    *prometheus.HistogramVec // group, stage
	backend  *prometheus.HistogramVec // group, stage
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tollgate", Subsystem: "proxy", Name: "requests_total",
			Help: "Requests answered by the data plane, by group, API, stage and status class.",
		}, []string{"group", "api", "stage", "class"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tollgate", Subsystem: "proxy", Name: "response_bytes_total",
			Help: "Response body bytes sent to clients, by group, API and stage.",
		}, []string{"group", "api", "stage"}),
		total: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tollgate", Subsystem: "proxy", Name: "request_duration_seconds",
			Help:    "Time from the handler's start to the response being ready, by group and stage.",
			Buckets: latencyBuckets,
		}, []string{"group", "stage"}),
		backend: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tollgate", Subsystem: "proxy", Name: "backend_duration_seconds",
			Help:    "Time spent waiting on http backends, by group and stage.",
			Buckets: latencyBuckets,
		}, []string{"group", "stage"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytesOut, m.total, m.backend} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// series are the resolved children for one (group, api, stage), looked up when a table
// is compiled so the hot path only increments. A nil *series records nothing.
type series struct {
	requests [len(statusClasses)]prometheus.Counter
	bytesOut prometheus.Counter
	total    prometheus.Observer
	backend  prometheus.Observer
}

type seriesKey struct{ group, api, stage string }

// seriesFor returns (and remembers, for deletion on a later rebuild) the children for
// k. Called only while building a table.
func (b *builder) seriesFor(k seriesKey) *series {
	m := b.p.metrics
	if m == nil {
		return nil
	}
	b.usedSeries[k] = true
	if s := b.p.series[k]; s != nil {
		return s
	}
	s := &series{
		bytesOut: m.bytesOut.WithLabelValues(k.group, k.api, k.stage),
		total:    m.total.WithLabelValues(k.group, k.stage),
		backend:  m.backend.WithLabelValues(k.group, k.stage),
	}
	for i, cl := range statusClasses {
		s.requests[i] = m.requests.WithLabelValues(k.group, k.api, k.stage, cl)
	}
	b.p.series[k] = s
	return s
}

// dropSeries deletes the children of keys no route uses any more. Histograms are shared
// by every API of a group and stage, so they go only when the group-stage pair does.
func (p *Proxy) dropSeries(used map[seriesKey]bool) {
	if p.metrics == nil {
		return
	}
	pairs := map[[2]string]bool{}
	for k := range used {
		pairs[[2]string{k.group, k.stage}] = true
	}
	for k := range p.series {
		if used[k] {
			continue
		}
		delete(p.series, k)
		p.metrics.bytesOut.DeleteLabelValues(k.group, k.api, k.stage)
		for _, cl := range statusClasses {
			p.metrics.requests.DeleteLabelValues(k.group, k.api, k.stage, cl)
		}
		if !pairs[[2]string{k.group, k.stage}] {
			p.metrics.total.DeleteLabelValues(k.group, k.stage)
			p.metrics.backend.DeleteLabelValues(k.group, k.stage)
		}
	}
}

// record counts one answered request. It does not allocate.
func (s *series) record(status, bodyLen int, elapsed, backend time.Duration) {
	if s == nil {
		return
	}
	if cl := status/100 - 1; cl >= 0 && cl < len(s.requests) {
		s.requests[cl].Inc()
	}
	s.bytesOut.Add(float64(bodyLen))
	s.total.Observe(elapsed.Seconds())
	if backend > 0 {
		s.backend.Observe(backend.Seconds())
	}
}
