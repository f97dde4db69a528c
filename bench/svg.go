package main

import (
	"cmp"
	"fmt"
	"html"
	"math"
	"strings"
)

// This file draws the table's charted rows as a hand-written SVG: one
// panel per row, one horizontal bar per library, the figure written after
// each bar, two panels a line. No chart library: the file is plain text
// that a diff can review.

// Layout of the chart, in pixels.
const (
	svgCols    = 2
	panelW     = 470
	labelW     = 110 // library names
	valueW     = 90  // figures after the bars
	barH       = 16
	barGap     = 6
	panelTitle = 34 // title and scale lines above the bars
	panelPad   = 16
	svgHeader  = 46
)

// colors of the libraries, by name; others are grey.
var colors = map[string]string{
	"tiered":         "#2b6cb0",
	"go-redis/cache": "#dd6b20",
	"rueidis":        "#38a169",
	"go-redis":       "#718096",
}

func (r *report) svg(m machine) []byte {
	var panels []*row
	for _, w := range r.rows {
		if w.chart != nil {
			panels = append(panels, w)
		}
	}
	panelH := panelTitle + len(r.kinds)*(barH+barGap) + panelPad
	lines := (len(panels) + svgCols - 1) / svgCols
	width := svgCols*panelW + 20
	height := svgHeader + lines*panelH + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="15" font-weight="bold">tiered and its peers (make bench-peers)</text>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="38" fill="#4a5568">%s, %s</text>`+"\n", esc(m.date), esc(m.String()))
	for i, w := range panels {
		x := 10 + (i%svgCols)*panelW
		y := svgHeader + (i/svgCols)*panelH
		r.panel(&b, w, x, y)
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// panel draws row w with its top left corner at x, y.
func (r *report) panel(b *strings.Builder, w *row, x, y int) {
	c := w.chart
	scale := "linear scale"
	if c.log {
		scale = "log scale"
	}
	better := "higher is better"
	if c.lowerBetter {
		better = "lower is better"
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x, y+14, esc(c.title))
	fmt.Fprintf(b, `<text x="%d" y="%d" fill="#718096" font-size="11">%s, %s</text>`+"\n", x, y+28, scale, better)
	lo, hi := r.bounds(w)
	barMax := float64(panelW - labelW - valueW - 10)
	for j, k := range r.kinds {
		by := y + panelTitle + j*(barH+barGap)
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x+labelW-6, by+12, esc(k.name))
		cl, ok := w.cells[k.name]
		v := cl.value
		length := 0.0
		switch {
		case !ok || math.IsNaN(v):
			label := "not run"
			if ok {
				label = cmp.Or(cl.note, "no figure: see the table")
			}
			fmt.Fprintf(b, `<text x="%d" y="%d" fill="#718096">%s</text>`+"\n", x+labelW, by+12, label)
			continue
		case hi <= 0:
		case c.log && v > 0:
			length = barMax * (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		case !c.log:
			length = barMax * v / hi
		}
		length = max(length, 1)
		color := colors[k.name]
		if color == "" {
			color = "#a0aec0"
		}
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x+labelW, by, length, barH, color)
		fmt.Fprintf(b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(x+labelW)+length+4, by+12, esc(num(v)))
	}
}

// bounds returns the scale of row w: for a log scale, a power of ten below
// its smallest positive figure and its largest; for a linear one, 0 and its
// largest.
func (r *report) bounds(w *row) (lo, hi float64) {
	lo = math.Inf(1)
	for _, c := range w.cells {
		if math.IsNaN(c.value) {
			continue
		}
		hi = max(hi, c.value)
		if c.value > 0 {
			lo = min(lo, c.value)
		}
	}
	if !w.chart.log {
		return 0, hi
	}
	if math.IsInf(lo, 1) {
		return 1, max(hi, 10)
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo))-0.3) // the smallest bar still shows
	return lo, max(hi, lo*10)
}

func esc(s string) string { return html.EscapeString(s) }
