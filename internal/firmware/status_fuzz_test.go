package firmware

import (
	"encoding/json"
	"reflect"
	"testing"
)

func intp(n int) *int { return &n }

func TestDecodeReport(t *testing.T) {
	tests := []struct {
		name, in, field string
		want            Report
	}{
		{name: "progress", in: `{"rollout_id":"r1","status":"downloading","progress":40}`, want: Report{RolloutID: "r1", Status: Downloading, Progress: 40}},
		{name: "versions only", in: `{"version":"1.0","hardware_version":"rev-b"}`, want: Report{Version: "1.0", HardwareVersion: "rev-b"}},
		{name: "error alias", in: `{"status":"failed","error":"disk full"}`, want: Report{Status: Failed, Message: "disk full"}},
		{name: "not an object", in: `[1]`, field: "payload"},
		{name: "two objects", in: `{"status":"failed"}{}`, field: "payload"},
		{name: "unknown status", in: `{"status":"queued"}`, field: "status"},
		{name: "empty", in: `{}`, field: "status"},
		{name: "bad progress", in: `{"status":"downloading","progress":101}`, field: "progress"},
		{name: "updated needs version", in: `{"status":"updated"}`, field: "version"},
		{name: "version not string", in: `{"version":1}`, field: "version"},
		{name: "attempt", in: `{"rollout_id":"r1","attempt":2,"status":"installing"}`, want: Report{RolloutID: "r1", Attempt: intp(2), Status: Installing}},
		{name: "attempt 0", in: `{"rollout_id":"r1","attempt":0,"status":"failed"}`, want: Report{RolloutID: "r1", Attempt: intp(0), Status: Failed}},
		{name: "attempt fraction", in: `{"status":"failed","attempt":1.5}`, field: "attempt"},
		{name: "attempt negative", in: `{"status":"failed","attempt":-1}`, field: "attempt"},
		{name: "attempt string", in: `{"status":"failed","attempt":"1"}`, field: "attempt"},
		{name: "attempt too large", in: `{"status":"failed","attempt":1001}`, field: "attempt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeReport([]byte(tt.in))
			if tt.field != "" {
				re, ok := err.(*ReportError)
				if !ok || re.Field != tt.field {
					t.Fatalf("err = %v, want a ReportError on %s", err, tt.field)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzDecodeReport(f *testing.F) {
	for _, s := range []string{`{"rollout_id":"r1","status":"downloading","progress":40}`, `{"version":"1.0"}`,
		`{"status":"failed","message":"x"}`, `{"status":"updated","version":"2"}`, `null`, `{"progress":"x"}`,
		`{"rollout_id":"r1","attempt":3,"status":"verifying"}`, `{"status":"failed","attempt":1e3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReport(b)
		if err != nil {
			if _, ok := err.(*ReportError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if r.Status != "" && !deviceStates[r.Status] {
			t.Fatalf("accepted status %q", r.Status)
		}
		if r.Progress < 0 || r.Progress > 100 || len(r.Message) > maxMessageBytes || len(r.Version) > maxVersionLen ||
			(r.Attempt != nil && (*r.Attempt < 0 || *r.Attempt > maxAttempt)) {
			t.Fatalf("accepted out-of-bounds report %+v", r)
		}
		// What was accepted encodes and decodes to the same report.
		again, _ := json.Marshal(r)
		r2, err := DecodeReport(again)
		if err != nil || !reflect.DeepEqual(r2, r) {
			t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
		}
	})
}
