package client_test

import (
	"context"
	"testing"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/messagelog"
)

func TestTokensAndAudit(t *testing.T) {
	ctx := context.Background()
	_, c := setup(t, apitest.AdminToken)
	tok, err := c.CreateToken(ctx, "ci", "viewer")
	if err != nil || tok.Secret == "" || tok.Role != "viewer" || tok.ID == "" {
		t.Fatalf("CreateToken = %+v, %v", tok, err)
	}
	toks, err := c.ListTokens(ctx)
	if err != nil || len(toks) != 4 || toks[3].Secret != "" {
		t.Fatalf("ListTokens = %+v, %v", toks, err)
	}
	rev, err := c.RevokeToken(ctx, tok.ID)
	if err != nil || rev.RevokedAt == nil {
		t.Fatalf("RevokeToken = %+v, %v", rev, err)
	}
	if _, err := c.RevokeToken(ctx, "nope"); client.StatusOf(err) != 404 {
		t.Errorf("revoke missing: %v", err)
	}
	page, err := c.Audit(ctx, client.AuditQuery{Limit: 1})
	if err != nil || len(page.Entries) != 1 || page.Next == "" || page.Entries[0].OperationID != "revokeToken" || page.Entries[0].Status != 404 {
		t.Fatalf("Audit = %+v, %v", page, err)
	}
	page, err = c.Audit(ctx, client.AuditQuery{Cursor: page.Next, Limit: 1})
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Status != 200 || page.Entries[0].Target != tok.ID {
		t.Fatalf("Audit page 2 = %+v, %v", page, err)
	}
	if _, err := c.CreateToken(ctx, "x", "root"); client.StatusOf(err) != 400 {
		t.Errorf("bad role: %v", err)
	}
}

func TestTypesMessagesFilters(t *testing.T) {
	ctx := context.Background()
	f, c := setup(t, apitest.ViewerToken)
	types, err := c.DeviceTypes(ctx)
	if err != nil || len(types) != 1 || types[0].Name != "WeatherStation" || types[0].Fields["temperature"].Unit != "celsius" {
		t.Fatalf("DeviceTypes = %+v, %v", types, err)
	}
	f.Messages.Add(messagelog.Message{ID: 1, DeviceID: "ws-1", Topic: "devices/ws-1/data", Payload: []byte("{}"), Accepted: true},
		messagelog.Message{ID: 2, DeviceID: "ws-1", Topic: "devices/ws-1/data", Payload: []byte("x"), Code: "invalid_json"})
	page, err := c.Messages(ctx, client.MessagesQuery{DeviceID: "ws-1", Rejected: true})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Code != "invalid_json" {
		t.Fatalf("Messages = %+v, %v", page, err)
	}
	d := apitestDevice("hall-lamp")
	d.Tags = []string{"ground"}
	f.Devices.Put(d)
	f.Devices.Put(apitestDevice("door"))
	devs, err := c.ListAllDevices(ctx, client.ListOptions{Tag: "ground", Limit: 1})
	if err != nil || len(devs) != 1 || devs[0].ID != "hall-lamp" {
		t.Fatalf("tag = %+v, %v", devs, err)
	}
	devs, err = c.ListAllDevices(ctx, client.ListOptions{Query: "DOO", Limit: 1})
	if err != nil || len(devs) != 1 || devs[0].ID != "door" {
		t.Fatalf("q = %+v, %v", devs, err)
	}
}
