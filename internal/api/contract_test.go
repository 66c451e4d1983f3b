package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
)

// The contract test: every JSON answer any test of this package receives
// (through do, or checkContract) is validated against the response schema
// the served OpenAPI document gives for its operation and status, and
// TestMain fails the run if an operation of the document got no validated
// success answer.

const docURL = "https://devicehub.test/api/v1/openapi.json"

// contractDoc is the OpenAPI document as the server serves it, compiled.
type contractDoc struct {
	doc      map[string]any
	compiler *jsonschema.Compiler
	ops      []contractOp

	mu       sync.Mutex
	schemas  map[string]*jsonschema.Schema
	verified map[string]bool // operationId → a 2xx answer was validated
	checked  int
}

type contractOp struct {
	id, method, template string
	re                   *regexp.Regexp
	op                   map[string]any
}

var (
	contractOnce sync.Once
	contract     *contractDoc
	contractErr  error
)

// loadContract fetches /api/v1/openapi.json from an API over fakes.
func loadContract() (*contractDoc, error) {
	contractOnce.Do(func() {
		h := api.New(apitest.New().Deps(), api.Options{}, nil).Handler()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
		if rec.Code != 200 {
			contractErr = fmt.Errorf("openapi.json: status %d", rec.Code)
			return
		}
		raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(rec.Body.Bytes()))
		if err != nil {
			contractErr = fmt.Errorf("openapi.json: %w", err)
			return
		}
		doc, _ := raw.(map[string]any)
		if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1") {
			contractErr = fmt.Errorf("openapi version %q, want 3.1", v)
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		if err := c.AddResource(docURL, raw); err != nil {
			contractErr = err
			return
		}
		cd := &contractDoc{doc: doc, compiler: c, schemas: map[string]*jsonschema.Schema{}, verified: map[string]bool{}}
		paths, _ := doc["paths"].(map[string]any)
		for tmpl, v := range paths {
			re := regexp.MustCompile("^" + regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(tmpl), `[^/]+`) + "$")
			for method, o := range v.(map[string]any) {
				op, ok := o.(map[string]any)
				if !ok {
					continue
				}
				id, _ := op["operationId"].(string)
				cd.ops = append(cd.ops, contractOp{id: id, method: strings.ToUpper(method), template: tmpl, re: re, op: op})
			}
		}
		// Literal paths before templated ones: /api/v1/tokens/{id} must
		// not swallow a literal sibling.
		sort.Slice(cd.ops, func(i, j int) bool {
			return strings.Count(cd.ops[i].template, "{") < strings.Count(cd.ops[j].template, "{")
		})
		contract = cd
	})
	return contract, contractErr
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func (cd *contractDoc) schema(loc string) (*jsonschema.Schema, error) {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	if s, ok := cd.schemas[loc]; ok {
		return s, nil
	}
	s, err := cd.compiler.Compile(loc)
	if err != nil {
		return nil, err
	}
	cd.schemas[loc] = s
	return s, nil
}

func (cd *contractDoc) find(method, path string) *contractOp {
	for i := range cd.ops {
		if cd.ops[i].method == method && cd.ops[i].re.MatchString(path) {
			return &cd.ops[i]
		}
	}
	return nil
}

// checkContract validates one answer against the document. Answers of
// paths the document does not describe (/healthz, unknown endpoints) must
// still have the one error shape when they are errors.
func checkContract(t testing.TB, method, path string, status int, contentType string, body []byte) {
	t.Helper()
	cd, err := loadContract()
	if err != nil {
		t.Fatalf("contract: %v", err)
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	ct, _, _ := strings.Cut(contentType, ";")
	if status >= 300 && status < 400 {
		return // the ServeMux cleaning a path ("/a/./b"): no operation answered
	}
	op := cd.find(method, path)
	var loc string
	switch {
	case op == nil && status >= 400 && ct == "application/json":
		loc = docURL + "#/components/schemas/ErrorResponse"
	case op == nil:
		return
	default:
		responses, _ := op.op["responses"].(map[string]any)
		key := strconv.Itoa(status)
		if _, ok := responses[key]; !ok {
			key = "default"
			if status < 400 {
				t.Errorf("contract: %s %s (%s) answered %d, which the document does not list", method, path, op.id, status)
				return
			}
		}
		resp, _ := responses[key].(map[string]any)
		content, _ := resp["content"].(map[string]any)
		if _, ok := content[ct]; !ok {
			t.Errorf("contract: %s %s (%s) answered %d with content type %q; the document lists %v", method, path, op.id, status, contentType, keysOf(content))
			return
		}
		if ct != "application/json" {
			cd.markVerified(op.id, status)
			return // an event stream: see TestEventsContract
		}
		loc = docURL + "#/paths/" + pointerEscape(op.template) + "/" + strings.ToLower(method) + "/responses/" + key + "/content/" + pointerEscape(ct) + "/schema"
	}
	sch, err := cd.schema(loc)
	if err != nil {
		t.Fatalf("contract: compile %s: %v", loc, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Errorf("contract: %s %s answered %d with invalid JSON %q: %v", method, path, status, body, err)
		return
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("contract: %s %s answered %d with a body the document does not allow: %v\nbody: %.500s", method, path, status, err, body)
		return
	}
	if op != nil {
		cd.markVerified(op.id, status)
	}
}

// checkSchema validates a JSON value against a named schema of the
// document's components.
func checkSchema(t testing.TB, name string, data []byte) {
	t.Helper()
	cd, err := loadContract()
	if err != nil {
		t.Fatalf("contract: %v", err)
	}
	sch, err := cd.schema(docURL + "#/components/schemas/" + name)
	if err != nil {
		t.Fatalf("contract: schema %s: %v", name, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("contract: %s: invalid JSON %q", name, data)
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("contract: %s does not allow %.300s: %v", name, data, err)
	}
}

func (cd *contractDoc) markVerified(id string, status int) {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	cd.checked++
	if status < 300 {
		cd.verified[id] = true
	}
}

// unverified returns the operations no test got a validated success
// answer of.
func (cd *contractDoc) unverified() []string {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	var out []string
	for _, op := range cd.ops {
		if !cd.verified[op.id] {
			out = append(out, op.id)
		}
	}
	sort.Strings(out)
	return out
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// contractClient is an http.RoundTripper that validates every answer, for
// tests that talk to an httptest server.
type contractClient struct {
	t    testing.TB
	next http.RoundTripper
}

func (c contractClient) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		if err == nil {
			checkContract(c.t, req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), nil)
		}
		return resp, err
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	checkContract(c.t, req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), buf.Bytes())
	resp.Body = ioNopCloser{bytes.NewReader(buf.Bytes())}
	return resp, nil
}

type ioNopCloser struct{ *bytes.Reader }

func (ioNopCloser) Close() error { return nil }

func TestOpenAPIDocument(t *testing.T) {
	cd, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	comps, _ := cd.doc["components"].(map[string]any)
	schemes, _ := comps["securitySchemes"].(map[string]any)
	if b, _ := schemes["bearer"].(map[string]any); b["scheme"] != "bearer" || b["type"] != "http" {
		t.Errorf("security scheme bearer: %v", schemes["bearer"])
	}
	seen := map[string]bool{}
	for _, op := range cd.ops {
		if op.id == "" || seen[op.id] {
			t.Errorf("%s %s: operation id %q missing or repeated", op.method, op.template, op.id)
		}
		seen[op.id] = true
		role, _ := op.op[api.RoleExtension].(string)
		sec, _ := op.op["security"].([]any)
		wantSec := 1
		switch {
		case role == "secret": // the secret is in the body
			wantSec = 0
		case op.id == "getProvisioningOperation": // the operation's secret or a token
			wantSec = 2
		}
		if role == "" || len(sec) != wantSec {
			t.Errorf("%s: role %q security %v", op.id, role, sec)
		}
		responses, _ := op.op["responses"].(map[string]any)
		if _, ok := responses["default"]; !ok {
			t.Errorf("%s: no default (error) response", op.id)
		}
		if !strings.HasPrefix(op.template, "/api/v1/") {
			t.Errorf("%s: path %s not under /api/v1", op.id, op.template)
		}
	}
	// Every request schema that huma validates must reject unknown
	// properties: the document says what the API accepts.
	for _, name := range []string{"ProvisionRequest", "CreateTokenRequest", "ErrorResponse", "Device", "ProvisionByIDRequest",
		"UpdateDeviceRequest", "CreateGroupRequest", "RenameGroupRequest", "CreateProvisioningTokenRequest", "RotateRequest",
		"CertificateRequest", "ApproveRequest", "RejectRequest", "ReasonRequest"} {
		s, _ := comps["schemas"].(map[string]any)[name].(map[string]any)
		if s["additionalProperties"] != false {
			t.Errorf("schema %s allows additional properties", name)
		}
	}
	// Device-facing bodies ignore unknown keys, and the document says so.
	for _, name := range []string{"CreateOperationRequest", "RegisterRequest"} {
		s, _ := comps["schemas"].(map[string]any)[name].(map[string]any)
		if s["additionalProperties"] != true {
			t.Errorf("schema %s: additionalProperties %v, want true", name, s["additionalProperties"])
		}
	}
}

func TestDocsPage(t *testing.T) {
	_, h := fixture(t)
	r := do(t, h, "GET", "/api/v1/docs", "", "")
	if r.status != 200 || !strings.Contains(r.raw, "openapi.json") {
		t.Fatalf("docs: %d %.200s", r.status, r.raw)
	}
	// It must work without the internet: no script, style or font from
	// anywhere but the page itself.
	for _, bad := range []string{"<script src", "http://", "https://", "<link"} {
		if strings.Contains(r.raw, bad) {
			t.Errorf("docs page refers to %q", bad)
		}
	}
	if r := do(t, h, "GET", "/api/v1/openapi.yaml", "", ""); r.status != 200 || !strings.Contains(r.raw, "openapi: 3.1") {
		t.Errorf("openapi.yaml: %d %.100s", r.status, r.raw)
	}
}
