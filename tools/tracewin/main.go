// Command tracewin sums a Go execution trace by windows of wall time:
// for each window (250 ms by default, from -start, a Unix time in
// seconds), the cores its goroutines ran on, the time goroutines spent
// runnable (waiting for a P) and in system calls, the same for the
// committer's goroutine and the store's checkpointer, message-log
// compactor and the broker's deep readers (found by their stacks), and
// the GC's mark phase, mark assists and stop-the-world pauses, in ms.
//
// It reads the trace `devicehub bench --hub-trace` writes
// (DIR/devicehub-open.trace); -start is the open-loop run's "load from"
// time in the bench's log, so that its windows are the bench's windows
// of late messages:
//
//	cd tools/tracewin && go run . -start 1796522527.7 -n 40 DIR/devicehub-open.trace
//
// A module of its own, so that the hub does not depend on
// golang.org/x/exp.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

const nb = 8 // buckets: running, runnable, syscall, waiting

func main() {
	start := flag.Float64("start", 0, "load start, unix seconds")
	win := flag.Duration("win", 250*time.Millisecond, "window")
	n := flag.Int("n", 80, "windows")
	flag.Parse()
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		panic(err)
	}
	var off int64 // wall ns = trace time + off
	type gst struct {
		state trace.GoState
		since int64
		role  string
	}
	gs := map[trace.GoID]*gst{}
	roles := []string{"all", "commit", "ckpt", "mlog", "reader"}
	acc := map[string][][nb]float64{}
	for _, ro := range roles {
		acc[ro] = make([][nb]float64, *n)
	}
	gcMark := make([]float64, *n)
	assist := make([]float64, *n)
	stw := make([]float64, *n)
	w0 := int64(*start * 1e9)
	wn := int64(*win)
	// spread calls fn with each window's share, in ms, of the trace
	// interval [from, to); time before the first window or after the
	// last is left out.
	spread := func(from, to int64, fn func(i int, ms float64)) {
		if off == 0 {
			return
		}
		a, b := max(from+off-w0, 0), to+off-w0
		for a < b {
			i := a / wn
			end := min((i+1)*wn, b)
			if int(i) < *n {
				fn(int(i), float64(end-a)/1e6)
			}
			a = end
		}
	}
	add := func(arr [][nb]float64, k int, from, to int64) {
		spread(from, to, func(i int, ms float64) { arr[i][k] += ms })
	}
	addf := func(arr []float64, from, to int64) {
		spread(from, to, func(i int, ms float64) { arr[i] += ms })
	}
	idx := func(s trace.GoState) int {
		switch s {
		case trace.GoRunning:
			return 0
		case trace.GoRunnable:
			return 1
		case trace.GoSyscall:
			return 2
		case trace.GoWaiting:
			return 3
		}
		return -1
	}
	roleOf := func(st trace.Stack) string {
		for fr := range st.Frames() {
			switch {
			case strings.Contains(fr.Func, "Committer).run"):
				return "commit"
			case strings.Contains(fr.Func, "sqlite.(*Store).Run") && !strings.Contains(fr.Func, "func1"):
				return "ckpt"
			case strings.Contains(fr.Func, "runMessageLog"):
				return "mlog"
			case strings.Contains(fr.Func, "deepReaders).reader"):
				return "reader"
			}
		}
		return ""
	}
	var markStart, stwStart int64
	assistStart := map[trace.GoID]int64{}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		t := int64(ev.Time())
		switch ev.Kind() {
		case trace.EventSync:
			if cs := ev.Sync().ClockSnapshot; cs != nil && off == 0 {
				off = cs.Wall.UnixNano() - int64(cs.Trace)
			}
		case trace.EventRangeBegin, trace.EventRangeEnd:
			rg := ev.Range()
			begin := ev.Kind() == trace.EventRangeBegin
			switch {
			case rg.Name == "GC concurrent mark phase":
				if begin {
					markStart = t
				} else if markStart > 0 {
					addf(gcMark, markStart, t)
				}
			case strings.HasPrefix(rg.Name, "stop-the-world"):
				if begin {
					stwStart = t
				} else if stwStart > 0 {
					addf(stw, stwStart, t)
				}
			case rg.Name == "GC mark assist":
				g := ev.Goroutine()
				if begin {
					assistStart[g] = t
				} else if s, ok := assistStart[g]; ok {
					addf(assist, s, t)
					delete(assistStart, g)
				}
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			g := gs[id]
			if g == nil {
				g = &gst{state: from, since: t}
				gs[id] = g
			}
			if g.role == "" {
				g.role = roleOf(st.Stack)
				if g.role == "" {
					g.role = roleOf(ev.Stack())
					if g.role != "" && ev.Goroutine() != id {
						g.role = ""
					}
				}
			}
			if k := idx(g.state); k >= 0 {
				add(acc["all"], k, g.since, t)
				if g.role != "" {
					add(acc[g.role], k, g.since, t)
				}
			}
			g.state, g.since = to, t
		}
	}
	fmt.Printf("win  run_cores runq_ms sys_ms | commit run/runq/sys/wait ms | ckpt run/sys | mlog run/sys | readers run/runq | gc_mark assist stw\n")
	for i := 0; i < *n; i++ {
		a := acc["all"][i]
		c := acc["commit"][i]
		k := acc["ckpt"][i]
		m := acc["mlog"][i]
		rd := acc["reader"][i]
		w := float64(wn) / 1e6
		fmt.Printf("%3d %5.2f %7.0f %6.0f | %4.0f %4.0f %4.0f %4.0f | %4.0f %4.0f | %4.0f %4.0f | %5.0f %5.0f | %4.0f %5.1f %5.1f\n",
			i, a[0]/w, a[1], a[2], c[0], c[1], c[2], c[3], k[0], k[2], m[0], m[2], rd[0], rd[1], gcMark[i], assist[i], stw[i])
	}
}
