package main

import (
	"strings"
	"testing"
)

// TestCompareMarkdown checks the second build's table: ratios of tollgate-b to
// tollgate round by round, over all rounds and per placement.
func TestCompareMarkdown(t *testing.T) {
	r := &report{Scenarios: []scenarioInfo{{Name: "full"}}, byKey: map[string]*row{}}
	r.byKey["full/"+tTollgate] = &row{Target: tTollgate,
		RoundRPS:      []float64{100, 100, 100},
		RoundCPU10k:   []float64{2, 2, 2},
		RoundFarShare: []float64{0, 0, 1},
	}
	r.byKey["full/"+tTollgateB] = &row{Target: tTollgateB,
		RoundRPS:      []float64{110, 120, 90},
		RoundCPU10k:   []float64{1.8, 1.9, 2.2},
		RoundFarShare: []float64{0, 0, 1},
	}
	var b strings.Builder
	r.compareMarkdown(&b)
	want := "| full | 3 | 1.100 | 0.950 | 2 | 1.150 | 0.925 | 1 | 0.900 | 1.100 |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}

	// With -compare-workers the base is the workers target, not the one-process node.
	r.Options.CompareWorkers = true
	r.byKey["full/"+tTollgateWorkers] = r.byKey["full/"+tTollgate]
	delete(r.byKey, "full/"+tTollgate)
	b.Reset()
	r.compareMarkdown(&b)
	if !strings.Contains(b.String(), want) || !strings.Contains(b.String(), "against "+tTollgateWorkers) {
		t.Errorf("-compare-workers table lacks %q against %s:\n%s", want, tTollgateWorkers, b.String())
	}

	delete(r.byKey, "full/"+tTollgateB)
	b.Reset()
	if r.compareMarkdown(&b); b.Len() != 0 {
		t.Errorf("a run without -compare-bin printed:\n%s", b.String())
	}
}
