package storetest

import (
	"context"
	"slices"
	"testing"

	"github.com/devicehub/devicehub/internal/access"
)

func testAPIAudit(t *testing.T, b Backend) {
	ctx := context.Background()
	entries := []access.AuditEntry{
		{Time: at(1), TokenID: "t1", TokenName: "admin", Role: access.Admin, Method: "POST", Path: "/api/v1/devices", OperationID: "provisionDevice", Target: "d1", Status: 201, RemoteAddr: "10.0.0.1:5000"},
		{Time: at(2), TokenID: "t2", TokenName: "dash", Role: access.Viewer, Method: "POST", Path: "/api/v1/devices", OperationID: "provisionDevice", Target: "d2", Status: 403},
		{Time: at(3), Method: "DELETE", Path: "/api/v1/tokens/t1", OperationID: "revokeToken", Target: "t1", Status: 401},
		{Time: at(4), TokenID: "t1", TokenName: "admin", Role: access.Admin, Method: "POST", Path: "/api/v1/tokens", OperationID: "createToken", Target: "t3", Status: 201},
	}
	var ids []int64
	for _, e := range entries {
		id, err := b.AppendAudit(ctx, e)
		if err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			t.Fatalf("ids not increasing: %v then %d", ids, id)
		}
		ids = append(ids, id)
	}
	all, err := b.ListAudit(ctx, access.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("got %d entries, want 4", len(all))
	}
	want := entries[0]
	want.ID = ids[0]
	equalJSON(t, "oldest entry", all[3], want)

	tests := []struct {
		name string
		q    access.AuditQuery
		want []int // indexes into entries, newest first
	}{
		{"all", access.AuditQuery{}, []int{3, 2, 1, 0}},
		{"token", access.AuditQuery{TokenID: "t1"}, []int{3, 0}},
		{"target", access.AuditQuery{Target: "t1"}, []int{2}},
		{"failed", access.AuditQuery{Failed: true}, []int{2, 1}},
		{"since", access.AuditQuery{Since: at(3)}, []int{3, 2}},
		{"limit", access.AuditQuery{Limit: 2}, []int{3, 2}},
		{"before", access.AuditQuery{Before: ids[2], Limit: 1}, []int{1}},
		{"none", access.AuditQuery{TokenID: "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.ListAudit(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var gotIDs, wantIDs []int64
			for _, e := range got {
				gotIDs = append(gotIDs, e.ID)
			}
			for _, i := range tt.want {
				wantIDs = append(wantIDs, ids[i])
			}
			if !slices.Equal(gotIDs, wantIDs) {
				t.Errorf("got ids %v, want %v", gotIDs, wantIDs)
			}
		})
	}
}

// testAPIAuditBatch: entries stored together are listed like entries
// stored one by one.
func testAPIAuditBatch(t *testing.T, b Backend) {
	ctx := context.Background()
	ab, ok := any(b).(interface {
		AppendAudits(ctx context.Context, es []access.AuditEntry) error
	})
	if !ok {
		t.Fatal("the backend does not store audit entries in batches")
	}
	var es []access.AuditEntry
	for i := range 5 {
		es = append(es, access.AuditEntry{Time: at(10 + i), TokenID: "tb", TokenName: "batch", Role: access.Operator, Method: "POST",
			Path: "/api/v1/devices/d/commands", OperationID: "sendCommand", Target: "d", Status: 201})
	}
	if err := ab.AppendAudits(ctx, es); err != nil {
		t.Fatal(err)
	}
	got, err := b.ListAudit(ctx, access.AuditQuery{TokenID: "tb"})
	if err != nil || len(got) != 5 || !got[0].Time.Equal(at(14)) || got[0].ID <= got[4].ID {
		t.Fatalf("batch %+v %v", got, err)
	}
}
