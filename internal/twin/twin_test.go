package twin

import (
	"encoding/json"
	"testing"
)

func TestMergePatch(t *testing.T) {
	tests := []struct {
		name, target, patch, want string
	}{
		{"add", `{"a":1}`, `{"b":2}`, `{"a":1,"b":2}`},
		{"replace", `{"a":1}`, `{"a":"x"}`, `{"a":"x"}`},
		{"remove", `{"a":1,"b":2}`, `{"a":null}`, `{"b":2}`},
		{"remove missing", `{}`, `{"a":null}`, `{}`},
		{"nested merge", `{"n":{"x":1,"y":2}}`, `{"n":{"y":null,"z":3}}`, `{"n":{"x":1,"z":3}}`},
		{"object over scalar", `{"n":1}`, `{"n":{"x":null,"y":1}}`, `{"n":{"y":1}}`},
		{"scalar over object", `{"n":{"x":1}}`, `{"n":[1,2]}`, `{"n":[1,2]}`},
		{"empty target", `null`, `{"a":{"b":1}}`, `{"a":{"b":1}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var target, patch map[string]any
			if err := json.Unmarshal([]byte(tt.target), &target); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.patch), &patch); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(MergePatch(target, patch))
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func FuzzMergePatch(f *testing.F) {
	f.Add([]byte(`{"a":{"b":1}}`), []byte(`{"a":{"b":null,"c":[1]}}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var target, patch map[string]any
		if json.Unmarshal(a, &target) != nil || json.Unmarshal(b, &patch) != nil {
			return
		}
		once, _ := json.Marshal(MergePatch(target, patch))
		var again map[string]any
		if err := json.Unmarshal(once, &again); err != nil {
			t.Fatal(err)
		}
		// A merge patch is idempotent.
		twice, _ := json.Marshal(MergePatch(again, patch))
		if string(once) != string(twice) {
			t.Fatalf("not idempotent: %s then %s", once, twice)
		}
	})
}
