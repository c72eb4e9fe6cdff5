package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// targetColor is each target's bar colour in the chart.
var targetColor = map[string]string{
	tDirect: "#9e9e9e", tNginx: "#2e7d32", tBareProxy: "#1565c0", tBareLoop: "#64b5f6", tTollgate: "#e65100", tTollgateWorkers: "#bf360c", tTollgate3: "#ffb74d",
}

// svg draws two grouped bar charts, one group per scenario, one bar per
// target: requests per second on top, p99 latency below.
func (r *report) svg() string {
	const (
		width   = 960
		left    = 70
		right   = 20
		panelH  = 220
		top1    = 60
		gap     = 80
		legendY = 30
	)
	top2 := top1 + panelH + gap
	height := top2 + panelH + 60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", left,
		html.EscapeString(fmt.Sprintf("Tollgate bench %s — %d CPUs, %d conns, %d × %v", r.Started.Format("2006-01-02 15:04"),
			r.Host.CPUs, r.Options.Conns, r.Options.Rounds, r.Options.Duration)))
	// Only the targets that measured something get a legend entry and a bar slot.
	var present []string
	for _, t := range allTargets {
		for _, x := range r.Rows {
			if x.Target == t && x.Skipped == "" && x.Requests > 0 {
				present = append(present, t)
				break
			}
		}
	}
	x := left
	for _, t := range present {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, legendY, targetColor[t], x+16, legendY+11, t)
		x += 110
	}
	groups := r.Scenarios
	panel := func(top int, title, unit string, val func(*row) float64, format string) {
		maxV := 0.0
		for _, x := range r.Rows {
			if x.Skipped == "" {
				maxV = math.Max(maxV, val(x))
			}
		}
		scale := niceCeil(maxV)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, top-8, html.EscapeString(title))
		for i := 0; i <= 4; i++ {
			v := scale * float64(i) / 4
			y := float64(top+panelH) - float64(panelH)*float64(i)/4
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, width-right, y, y)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, y+4, trimFloat(v)+unit)
		}
		if len(groups) == 0 || scale == 0 {
			return
		}
		gw := float64(width-left-right) / float64(len(groups))
		if len(present) == 0 {
			return
		}
		bw := math.Min(36, (gw-20)/float64(len(present)))
		for gi, g := range groups {
			gx := float64(left) + gw*float64(gi) + (gw-bw*float64(len(present)))/2
			for ti, t := range present {
				x := r.byKey[g.Name+"/"+t]
				bx := gx + bw*float64(ti)
				if x == nil || x.Skipped != "" || x.Requests == 0 {
					continue
				}
				v := val(x)
				h := float64(panelH) * v / scale
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
					bx+1, float64(top+panelH)-h, bw-2, h, targetColor[t], g.Name, t, fmt.Sprintf(format, v))
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" fill="#333">%s</text>`+"\n",
					bx+bw/2, float64(top+panelH)-h-3, shortNum(v))
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
				float64(left)+gw*(float64(gi)+0.5), top+panelH+16, html.EscapeString(g.Name))
		}
	}
	panel(top1, "Throughput (req/s, higher is better)", "", func(x *row) float64 { return x.RPS }, "%.0f req/s")
	panel(top2, "p99 latency (ms, lower is better)", " ms", func(x *row) float64 { return x.P99 }, "%.2f ms")
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 × a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	if v >= 1000 {
		return shortNum(v)
	}
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// shortNum prints 31234 as 31.2k and small values with two decimals.
func shortNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
