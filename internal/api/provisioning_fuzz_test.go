package api_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/devicehub/devicehub/internal/api/apitest"
)

// fuzzDeviceBody posts body to a device-facing endpoint and checks that the
// answer is never a 500 and always matches the document.
func fuzzDeviceBody(t *testing.T, path string, body []byte, bearer string) {
	_, h := fixture(t)
	req, err := http.NewRequest("POST", "http://hub"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
	}
	checkContract(t, "POST", path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
}

func FuzzCreateOperationBody(f *testing.F) {
	for _, s := range []string{`{"token":"dhp_good"}`, `{"token":"dhp_good","device_id":"a b"}`, `{"token":1}`, `[]`, `{`, ``, "\xff",
		`{"token":"dhp_good"} x`, `{"token":"dhp_nope","device_id":"x","extra":{"a":[1,2]}}`} {
		f.Add([]byte(s), "")
		f.Add([]byte(s), apitest.OperatorToken)
	}
	f.Fuzz(func(t *testing.T, body []byte, bearer string) {
		fuzzDeviceBody(t, "/api/v1/provisioning/operations", body, bearer)
	})
}

func FuzzRegisterBody(f *testing.F) {
	for _, s := range []string{`{"shared_secret":"shared-secret-0123","key":"k","type":"WeatherStation"}`,
		`{"shared_secret":"shared-secret-0123","key":"k","device_id":"../x","type":"WeatherStation"}`,
		`{"shared_secret":"shared-secret-0123","key":"","type":"Toaster"}`, `{"shared_secret":null}`, `{}`, `null`, `{`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzDeviceBody(t, "/api/v1/device/register", body, "")
	})
}
