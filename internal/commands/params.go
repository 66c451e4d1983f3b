package commands

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/devicehub/devicehub/internal/devicetype"
)

// ParamError is a command's payload that breaks its declared parameters:
// it names the parameter and the rule (type, required, min, max,
// unknown). It wraps ErrInvalid.
type ParamError struct {
	Command string
	Param   string // "" when the payload as a whole is wrong
	Rule    string
	Msg     string
}

func (e *ParamError) Error() string {
	if e.Param == "" {
		return fmt.Sprintf("invalid command: %s: %s (rule %s)", e.Command, e.Msg, e.Rule)
	}
	return fmt.Sprintf("invalid command: %s: parameter %q %s (rule %s)", e.Command, e.Param, e.Msg, e.Rule)
}

func (e *ParamError) Unwrap() error { return ErrInvalid }

// checkParams checks a payload against the command's declared parameters.
func checkParams(t *devicetype.Type, command string, payload json.RawMessage) error {
	err := t.ValidateParams(command, payload)
	if err == nil {
		return nil
	}
	var fe *devicetype.FieldError
	if errors.As(err, &fe) {
		return &ParamError{Command: command, Param: fe.Field, Rule: fe.Rule, Msg: fe.Msg}
	}
	return fmt.Errorf("%w: %s: %v", ErrInvalid, command, err)
}
