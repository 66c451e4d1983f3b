package sqlite

import (
	"database/sql/driver"
	"fmt"
	"strings"
	"sync"

	msqlite "modernc.org/sqlite"
)

// foldFunc is the SQL function that lower-cases text as Go does
// (strings.ToLower), for the device list's text search: SQLite's own
// lower folds ASCII only, and the search ignores case in any script.
const foldFunc = "devicehub_fold"

// registerFold registers foldFunc with the driver, once per process,
// before Open opens its connections (the driver adds it to every new one).
var registerFold = sync.OnceValue(func() error {
	return msqlite.RegisterDeterministicScalarFunction(foldFunc, 1, func(_ *msqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case nil:
			return nil, nil
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		default:
			return nil, fmt.Errorf("%s: want text, not %T", foldFunc, v)
		}
	})
})
