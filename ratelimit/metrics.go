package ratelimit

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are updated by the flush loop (and the nonce store), never by Allow.
type metrics struct {
	admitted, throttled, over *prometheus.CounterVec
	estError, keys            prometheus.Gauge

	mu    sync.Mutex
	stats map[statsKey]*dimStats
}

type statsKey struct {
	policy string
	dim    Dimension
}

type dimStats struct {
	admitted, throttled, over prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_admitted_total",
			Help: "Calls admitted by this node, by traffic policy and dimension (api, app, user).",
		}, []string{"policy", "dimension"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_throttled_total",
			Help: "Calls refused by this node, by traffic policy and dimension.",
		}, []string{"policy", "dimension"}),
		over: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_overadmitted_total",
			Help: "Calls admitted cluster-wide beyond a limit, as this node learned once the counts arrived (every node reports the same excess: take the max, not the sum).",
		}, []string{"policy", "dimension"}),
		estError: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_ratelimit_estimated_error",
			Help: "Largest number of calls on one key this node admitted in the last flush interval before its peers knew of them: what the cluster could over-admit on that key.",
		}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_ratelimit_keys",
			Help: "Quota keys (policy, dimension, subject) held in memory.",
		}),
		stats: map[statsKey]*dimStats{},
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.admitted, m.throttled, m.over, m.estError, m.keys} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

func (m *metrics) statsFor(policy string, d Dimension) *dimStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := statsKey{policy, d}
	if s := m.stats[k]; s != nil {
		return s
	}
	ds := d.String()
	s := &dimStats{
		admitted:  m.admitted.WithLabelValues(policy, ds),
		throttled: m.throttled.WithLabelValues(policy, ds),
		over:      m.over.WithLabelValues(policy, ds),
	}
	m.stats[k] = s
	return s
}
