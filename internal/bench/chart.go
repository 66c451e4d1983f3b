package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Point is one point of a chart series.
type Point struct{ X, Y float64 }

// Series is one line of a chart panel.
type Series struct {
	Name   string
	Points []Point
}

// Panel is one chart: axes, titles and lines.
type Panel struct {
	Title, XLabel, YLabel string
	Series                []Series
}

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // devicehub: blue
	{0xd6, 0x27, 0x28, 0xff}, // mosquitto: red
	{0x2c, 0xa0, 0x2c, 0xff}, // mochi: green
	{0x94, 0x67, 0xbd, 0xff},
}

// DrawChart draws the panels side by side into a PNG on w.
func DrawChart(w io.Writer, panels []Panel) error {
	const pw, ph = 560, 420
	img := image.NewRGBA(image.Rect(0, 0, pw*len(panels), ph))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	for i, p := range panels {
		drawPanel(img, image.Rect(i*pw, 0, (i+1)*pw, ph), p)
	}
	return png.Encode(w, img)
}

func drawPanel(img *image.RGBA, r image.Rectangle, p Panel) {
	black := color.RGBA{0, 0, 0, 0xff}
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	plot := image.Rect(r.Min.X+70, r.Min.Y+55, r.Max.X-20, r.Max.Y-70)
	text(img, r.Min.X+70, r.Min.Y+20, p.Title, black)
	text(img, plot.Min.X+plot.Dx()/2-len(p.XLabel)*7/2, plot.Max.Y+40, p.XLabel, black)
	text(img, r.Min.X+4, r.Min.Y+42, p.YLabel, black)

	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range p.Series {
		for _, pt := range s.Points {
			xmin, xmax, ymax = math.Min(xmin, pt.X), math.Max(xmax, pt.X), math.Max(ymax, pt.Y)
		}
	}
	if math.IsInf(xmin, 0) {
		text(img, plot.Min.X+10, plot.Min.Y+20, "no data", black)
		return
	}
	// The x axis starts at 0; a single x value still gets a width.
	if xmax == xmin {
		xmax++
	}
	xmin, xmax = 0, xmax*1.08
	ymax = niceCeil(ymax * 1.05)
	if ymax == 0 {
		ymax = 1
	}
	px := func(x float64) int { return plot.Min.X + int((x-xmin)/(xmax-xmin)*float64(plot.Dx())) }
	py := func(y float64) int { return plot.Max.Y - int(y/ymax*float64(plot.Dy())) }
	for i := 0; i <= 5; i++ {
		y := ymax * float64(i) / 5
		line(img, plot.Min.X, py(y), plot.Max.X, py(y), grey, 1)
		lbl := fmtNum(y)
		text(img, plot.Min.X-8-len(lbl)*7, py(y)+4, lbl, black)
	}
	ticks := map[float64]bool{}
	for _, s := range p.Series {
		for _, pt := range s.Points {
			ticks[pt.X] = true
		}
	}
	for x := range ticks {
		line(img, px(x), plot.Max.Y, px(x), plot.Max.Y+5, black, 1)
		lbl := fmtNum(x)
		text(img, px(x)-len(lbl)*7/2, plot.Max.Y+18, lbl, black)
	}
	line(img, plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y, black, 1)
	line(img, plot.Min.X, plot.Min.Y, plot.Min.X, plot.Max.Y, black, 1)
	for i, s := range p.Series {
		c := palette[i%len(palette)]
		for j, pt := range s.Points {
			x, y := px(pt.X), py(pt.Y)
			fill(img, image.Rect(x-3, y-3, x+4, y+4), c)
			if j > 0 {
				prev := s.Points[j-1]
				line(img, px(prev.X), py(prev.Y), x, y, c, 2)
			}
		}
		// Legend below the axis label.
		lx := r.Min.X + 70 + i*150
		fill(img, image.Rect(lx, r.Max.Y-16, lx+14, r.Max.Y-6), c)
		text(img, lx+18, r.Max.Y-6, s.Name, black)
	}
}

// niceCeil rounds x up to 1, 2 or 5 times a power of ten.
func niceCeil(x float64) float64 {
	if x <= 0 {
		return 0
	}
	e := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= x {
			return m * e
		}
	}
	return 10 * e
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// line draws a line of the given width (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA, width int) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for n := 0; n < 100000; n++ { // bounded: a line within an image is shorter
		for i := 0; i < width; i++ {
			for j := 0; j < width; j++ {
				img.SetRGBA(x0+i, y0+j, c)
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// chartDevices returns the device counts of the ingest scenarios in the
// order they ran (that of --devices), read from their names
// (ingest_closed_N): the results alone say which charts a run drew.
func (r *Results) chartDevices() []int {
	var ns []int
	for _, s := range r.Scenarios {
		if rest, ok := strings.CutPrefix(s.Name, "ingest_closed_"); ok {
			if n, err := strconv.Atoi(rest); err == nil {
				ns = append(ns, n)
			}
		}
	}
	return ns
}

// chartFile is the chart of the ingest scenarios of n devices: ChartFile
// for the first device count, bench-ingest-<n>.png for the others.
func chartFile(n, first int) string {
	if n == first {
		return ChartFile
	}
	return fmt.Sprintf("bench-ingest-%d.png", n)
}

// chartSystems are the systems a chart can show, in the order of their
// colours; a system without data has no line.
var chartSystems = []string{SysDevicehub, SysMosquitto, SysMochi}

// chartPanels builds the throughput and latency panels from the open-loop
// ingest scenarios of n devices (ingest_open_N_P, in the order they ran:
// that of --open-loop), at x = their offered load in % of the peak.
func (r *Results) chartPanels(n int) []Panel {
	tp := Panel{Title: fmt.Sprintf("Ingest throughput, %d devices, QoS 1", n), XLabel: "offered load (% of devicehub's peak)", YLabel: "acked msgs/s"}
	lat := Panel{Title: fmt.Sprintf("p99 publish -> PUBACK, %d devices", n), XLabel: "offered load (% of devicehub's peak)", YLabel: "ms"}
	prefix := fmt.Sprintf("ingest_open_%d_", n)
	var open []*Scenario
	for _, s := range r.Scenarios {
		if strings.HasPrefix(s.Name, prefix) {
			open = append(open, s)
		}
	}
	for _, sys := range chartSystems {
		var a, l []Point
		for _, s := range open {
			if sp, ok := s.Summary[sys]["achieved_rate"]; ok && sp.N > 0 {
				a = append(a, Point{s.OfferedPct, sp.Median})
			}
			if sp, ok := s.Summary[sys]["puback_p99_ms"]; ok && sp.N > 0 {
				l = append(l, Point{s.OfferedPct, sp.Median})
			}
		}
		if len(a) > 0 {
			tp.Series = append(tp.Series, Series{Name: sys, Points: a})
		}
		if len(l) > 0 {
			lat.Series = append(lat.Series, Series{Name: sys, Points: l})
		}
	}
	return []Panel{tp, lat}
}

func hasSeries(panels []Panel) bool {
	for _, p := range panels {
		if len(p.Series) > 0 {
			return true
		}
	}
	return false
}

// writeCharts writes a PNG chart into dir for every device count with
// open-loop data, and returns their file names.
func (r *Results) writeCharts(dir string) ([]string, error) {
	var files []string
	ns := r.chartDevices()
	for _, n := range ns {
		panels := r.chartPanels(n)
		if !hasSeries(panels) {
			continue
		}
		name := chartFile(n, ns[0])
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return files, fmt.Errorf("chart: %w", err)
		}
		if err := DrawChart(f, panels); err != nil {
			f.Close()
			return files, fmt.Errorf("chart: %w", err)
		}
		if err := f.Close(); err != nil {
			return files, fmt.Errorf("chart: %w", err)
		}
		files = append(files, name)
	}
	return files, nil
}
