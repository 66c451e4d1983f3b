// Package sqlite implements every store interface of the hub on SQLite.
package sqlite

import _ "modernc.org/sqlite" // the "sqlite" driver
