package bench

import (
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseOpenLoopRates(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[int]float64
		err  string // "": no error
	}{
		{"one", "100=10000", map[int]float64{100: 10000}, ""},
		{"two", "100=10000,1000=14000", map[int]float64{100: 10000, 1000: 14000}, ""},
		{"fractional and exponent rates", "5=12.5,10=1e4", map[int]float64{5: 12.5, 10: 10000}, ""},
		{"spaces", " 100 = 10000 , 1000=14000 ", map[int]float64{100: 10000, 1000: 14000}, ""},
		{"empty: no rate", "", map[int]float64{}, ""},
		{"blank: no rate", "  ", map[int]float64{}, ""},
		{"no =", "100", nil, `"100": want DEVICES=RATE (e.g. 100=10000)`},
		{"no rate", "100=", nil, `"100=": want DEVICES=RATE`},
		{"no count", "=10000", nil, `"=10000": want DEVICES=RATE`},
		{"empty pair", "100=1,,1000=2", nil, `"": want DEVICES=RATE`},
		{"trailing comma", "100=1,", nil, `"": want DEVICES=RATE`},
		{"colon for =", "100:10000", nil, `"100:10000": want DEVICES=RATE`},
		{"two =", "100=1=2", nil, `"100=1=2": rate "1=2" is not a number`},
		{"count not a number", "x=10000", nil, `"x=10000": device count "x" is not a positive integer`},
		{"count fractional", "1.5=10000", nil, `device count "1.5" is not a positive integer`},
		{"count zero", "0=10000", nil, `device count "0" is not a positive integer`},
		{"count negative", "-5=10000", nil, `device count "-5" is not a positive integer`},
		{"rate not a number", "100=fast", nil, `"100=fast": rate "fast" is not a number of messages per second`},
		{"rate with unit", "100=10k", nil, `rate "10k" is not a number`},
		{"rate NaN", "100=NaN", nil, `rate "NaN" is not a number`},
		{"rate infinite", "100=Inf", nil, `rate "Inf" is not a number`},
		{"rate out of range", "100=1e400", nil, `rate "1e400" is not a number`},
		{"rate zero", "100=0", nil, `"100=0": rate 0 must be above 0 messages per second`},
		{"rate negative", "100=-10", nil, `rate -10 must be above 0`},
		{"rate below 1/s", "100=0.5", nil, `"100=0.5": rate 0.5 must be from 1 to 100000000 messages per second (all devices together)`},
		{"rate too high", "1=1e300", nil, `rate 1e300 must be from 1 to 100000000 messages per second`},
		{"bounds", "1=1,2=1e8", map[int]float64{1: 1, 2: 1e8}, ""},
		{"count twice", "100=1,100=2", nil, `"100=2": a second rate for 100 devices`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOpenLoopRates(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseOpenLoopRates(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("ParseOpenLoopRates(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if again, err := ParseOpenLoopRates(FormatOpenLoopRates(got)); err != nil || !maps.Equal(again, got) {
				t.Errorf("formatted %q, read back %v, %v", FormatOpenLoopRates(got), again, err)
			}
		})
	}
}

func TestCheckOpenLoopRates(t *testing.T) {
	if err := checkOpenLoopRates(map[int]float64{100: 1, 1000: 2}, []int{100, 1000}); err != nil {
		t.Errorf("counts of --devices refused: %v", err)
	}
	if err := checkOpenLoopRates(nil, []int{100}); err != nil {
		t.Errorf("no rates refused: %v", err)
	}
	if err := checkOpenLoopRates(map[int]float64{100: 0}, []int{100}); !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), "open-loop rate 0 for 100 devices: must be from 1 to 100000000") {
		t.Errorf("rate 0: err = %v", err)
	}
	err := checkOpenLoopRates(map[int]float64{100: 1, 500: 2.5}, []int{100, 1000})
	if !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), "--open-loop-rate 500=2.5: 500 devices is not one of the ingest device counts (--devices 100,1000)") {
		t.Errorf("err = %v", err)
	}
}

// TestRateScenarioNames: an absolute rate's scenario never takes the name
// of a fraction's, whatever the two numbers.
func TestRateScenarioNames(t *testing.T) {
	for _, tc := range []struct {
		n    int
		rate float64
		want string
	}{
		{100, 50, "ingest_open_100_rate_50"},
		{1000, 12500.5, "ingest_open_1000_rate_12500.5"},
		{10, 1e7, "ingest_open_10_rate_10000000"},
	} {
		if got := rateScenarioName(tc.n, tc.rate); got != tc.want {
			t.Errorf("rateScenarioName(%d, %v) = %q, want %q", tc.n, tc.rate, got, tc.want)
		}
	}
}

// FuzzParseOpenLoopRates: --open-loop-rate is outside input. Whatever it
// holds, the parser returns an error or positive counts with rates the
// load generator can pace (and name), which format and read back the
// same.
func FuzzParseOpenLoopRates(f *testing.F) {
	for _, s := range []string{"100=10000,1000=14000", "", " 5 = 12.5 ", "100", "100=", "=1", "100=1,100=2", "x=1", "100=-1", "100=NaN", "100=1e400", "1=0x1p-2", "100=1,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rates, err := ParseOpenLoopRates(s)
		if err != nil {
			if rates != nil {
				t.Fatalf("rates %v returned with an error", rates)
			}
			if !strings.Contains(err.Error(), "DEVICES=RATE") && !strings.Contains(err.Error(), "device count") && !strings.Contains(err.Error(), "rate") {
				t.Fatalf("error %q does not say what is wrong", err)
			}
			return
		}
		for n, rate := range rates {
			if n <= 0 || !(rate >= MinOpenLoopRate && rate <= MaxOpenLoopRate) {
				t.Fatalf("%q: accepted %d=%v", s, n, rate)
			}
			// The load generator's interval of one device at the rate
			// neither rounds to 0 (a closed loop) nor overflows.
			if interval := float64(time.Second) * float64(n) / rate; n <= 1_000_000 && (interval < 1 || interval > math.MaxInt64) {
				t.Fatalf("%q: %d devices at %v msgs/s: interval %v ns", s, n, rate, interval)
			}
			if name := rateScenarioName(n, rate); len(name) > 80 || strings.HasSuffix(name, "_") {
				t.Fatalf("%q: scenario name %q", s, name)
			}
		}
		again, err := ParseOpenLoopRates(FormatOpenLoopRates(rates))
		if err != nil || !maps.Equal(again, rates) {
			t.Fatalf("%q: formatted %q, read back %v, %v", s, FormatOpenLoopRates(rates), again, err)
		}
	})
}
