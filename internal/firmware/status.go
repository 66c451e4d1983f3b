package firmware

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"
)

// Report is what a device says on devices/{id}/firmware/status (or POST
// /api/v1/device/firmware/status):
//
//	{"rollout_id": "...", "attempt": 0, "status": "downloading", "progress": 40,
//	 "version": "1.4.1", "hardware_version": "rev-b", "message": "..."}
//
// Status is one of the states a device reports (downloading, downloaded,
// verifying, installing, rebooting, confirming, updated, failed); it may be
// left out when the device only reports its versions (at boot). Version is
// the firmware the device runs now. Attempt is the attempt of the notice
// the device works on (the notice's "attempt"): a report of an earlier
// attempt of the same rollout (late, after a retry started) is recorded
// in the message log and changes nothing. A report without it is taken
// for the current attempt.
type Report struct {
	RolloutID       string `json:"rollout_id,omitempty"`
	Attempt         *int   `json:"attempt,omitempty" minimum:"0" maximum:"1000"`
	Status          State  `json:"status,omitempty"`
	Version         string `json:"version,omitempty"`
	HardwareVersion string `json:"hardware_version,omitempty"`
	Progress        int    `json:"progress,omitempty"`
	Message         string `json:"message,omitempty"`
}

// Bounds of a report.
const (
	maxReportBytes  = 16 << 10
	maxVersionLen   = 64
	maxReportIDLen  = 64
	maxMessageBytes = 1024
	maxAttempt      = 1000
)

// ReportError says which field of a report is wrong.
type ReportError struct {
	Field, Reason string
}

func (e *ReportError) Error() string { return "firmware status: " + e.Field + ": " + e.Reason }

// deviceStates are the states a device may report.
var deviceStates = map[State]bool{Downloading: true, Downloaded: true, Verifying: true, Installing: true,
	Rebooting: true, Confirming: true, Updated: true, Failed: true}

// DecodeReport parses and checks a status report.
func DecodeReport(b []byte) (Report, error) {
	var r Report
	if len(b) > maxReportBytes {
		return r, &ReportError{"payload", fmt.Sprintf("larger than %d bytes", maxReportBytes)}
	}
	var raw map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&raw); err != nil || raw == nil {
		return r, &ReportError{"payload", "must be a JSON object"}
	}
	if d.More() {
		return r, &ReportError{"payload", "must be one JSON object"}
	}
	str := func(name string, max int, dst *string) error {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return &ReportError{name, "must be a string"}
		}
		if len(s) > max {
			return &ReportError{name, fmt.Sprintf("longer than %d bytes", max)}
		}
		if !utf8.ValidString(s) {
			return &ReportError{name, "is not UTF-8"}
		}
		*dst = s
		return nil
	}
	var status string
	for _, f := range []struct {
		name string
		max  int
		dst  *string
	}{
		{"rollout_id", maxReportIDLen, &r.RolloutID},
		{"status", 32, &status},
		{"version", maxVersionLen, &r.Version},
		{"hardware_version", maxVersionLen, &r.HardwareVersion},
		{"message", maxMessageBytes, &r.Message},
	} {
		if err := str(f.name, f.max, f.dst); err != nil {
			return Report{}, err
		}
	}
	if r.Message == "" {
		// "error" is accepted for "message", as on config/status.
		if err := str("error", maxMessageBytes, &r.Message); err != nil {
			return Report{}, err
		}
	}
	if v, ok := raw["progress"]; ok && string(v) != "null" {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || math.IsNaN(f) || f < 0 || f > 100 {
			return Report{}, &ReportError{"progress", "must be a number from 0 to 100"}
		}
		r.Progress = int(f)
	}
	if v, ok := raw["attempt"]; ok && string(v) != "null" {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || f != math.Trunc(f) || f < 0 || f > maxAttempt {
			return Report{}, &ReportError{"attempt", fmt.Sprintf("must be a whole number from 0 to %d", maxAttempt)}
		}
		n := int(f)
		r.Attempt = &n
	}
	if status != "" {
		r.Status = State(status)
		if !deviceStates[r.Status] {
			return Report{}, &ReportError{"status", fmt.Sprintf("%q is not one of downloading, downloaded, verifying, installing, rebooting, confirming, updated, failed", status)}
		}
	}
	if r.Status == "" && r.Version == "" && r.HardwareVersion == "" {
		return Report{}, &ReportError{"status", "a report needs a status or a version"}
	}
	if (r.Status == Confirming || r.Status == Updated) && r.Version == "" {
		return Report{}, &ReportError{"version", "a " + status + " report names the version running"}
	}
	return r, nil
}
