package api

import (
	"io"
	"net/http"
	"regexp"
)

// streamRE is what a stream name in the data endpoint's path must match:
// one MQTT topic level without wildcards.
var streamRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// deviceData takes in readings a device posts with its API key: the same
// payload as on devices/{id}/data[/{stream}].
func (a *API) deviceData(w http.ResponseWriter, r *http.Request) {
	dev, _ := r.Context().Value(deviceKey{}).(deviceIdentity)
	stream := r.PathValue("stream")
	if stream != "" && !streamRE.MatchString(stream) {
		a.writeError(w, r, invalidArg("stream", "must match %s", streamRE))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxDataBytes))
	if err != nil {
		a.writeError(w, r, bodyError(err))
		return
	}
	res, err := a.deps.DeviceData.HandleHTTPData(r.Context(), dev.id, dev.typ, stream, body, r.Header.Get("Content-Type"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
