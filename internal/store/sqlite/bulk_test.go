package sqlite

import "testing"

func TestArgSlab(t *testing.T) {
	var a argSlab
	// The first commit has no slab: it allocates, and the next gets one
	// large enough.
	a.take(3)
	a.take(2)
	a.reset()
	if len(a.buf) != 5 {
		t.Fatalf("slab of %d values after a commit of 5, want 5", len(a.buf))
	}
	tests := []struct {
		name  string
		takes []int
		slab  int // len(a.buf) after reset
	}{
		{"fits", []int{3, 2}, 5},
		{"smaller", []int{1}, 5},
		{"larger grows the next", []int{4, 4}, 8},
		{"bounded", []int{maxArgSlab + 1}, maxArgSlab},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var parts [][]any
			for _, n := range tt.takes {
				p := a.take(n)
				if len(p) != 0 || cap(p) != n {
					t.Fatalf("take(%d) = len %d cap %d", n, len(p), cap(p))
				}
				for i := range n {
					p = append(p, i)
				}
				parts = append(parts, p)
			}
			// Parts never overlap: each still holds what was put in.
			for _, p := range parts {
				for i, v := range p {
					if v != i {
						t.Fatalf("part %v overwritten", p)
					}
				}
			}
			a.reset()
			if len(a.buf) != tt.slab {
				t.Errorf("slab of %d values, want %d", len(a.buf), tt.slab)
			}
			for i, v := range a.buf {
				if v != nil {
					t.Fatalf("slab[%d] = %v after reset: a commit's arguments are still referenced", i, v)
				}
			}
		})
	}
}
