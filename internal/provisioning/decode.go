package provisioning

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// MaxRequestBytes bounds the JSON body of a provisioning request.
const MaxRequestBytes = 64 << 10

// decode reads one JSON object into v: nothing after it, unknown keys
// ignored (devices with newer firmware may send more).
func decode(b []byte, v any) error {
	if len(b) > MaxRequestBytes {
		return fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	return nil
}

// DecodeCreateOperationRequest parses the body of
// POST /api/v1/provisioning/operations.
func DecodeCreateOperationRequest(b []byte) (CreateOperationRequest, error) {
	var r CreateOperationRequest
	err := decode(b, &r)
	return r, err
}

// DecodeRegisterRequest parses the body of POST /api/v1/device/register.
func DecodeRegisterRequest(b []byte) (RegisterRequest, error) {
	var r RegisterRequest
	err := decode(b, &r)
	return r, err
}

// DecodeCreateTokenRequest parses the body of an operator's token creation.
func DecodeCreateTokenRequest(b []byte) (CreateTokenRequest, error) {
	var r CreateTokenRequest
	err := decode(b, &r)
	return r, err
}

// DecodeApproveRequest parses the body of an approval (empty is fine).
func DecodeApproveRequest(b []byte) (ApproveRequest, error) {
	var r ApproveRequest
	if len(bytes.TrimSpace(b)) == 0 {
		return r, nil
	}
	err := decode(b, &r)
	return r, err
}

// DecodeRejectRequest parses the body of a rejection (empty is fine).
func DecodeRejectRequest(b []byte) (RejectRequest, error) {
	var r RejectRequest
	if len(bytes.TrimSpace(b)) == 0 {
		return r, nil
	}
	err := decode(b, &r)
	return r, err
}
