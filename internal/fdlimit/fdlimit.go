// Package fdlimit reads the process's open-file limit and divides it into
// connection budgets, so that no listener can take the descriptors every
// other part of the process needs (the database, the WAL, log files, the
// other listeners).
package fdlimit

// Reserve is how many descriptors a budget leaves for everything that is
// not a client connection, at least: the store (SQLite keeps the database,
// its WAL and shared memory open; PostgreSQL a pool of sockets), the
// listeners themselves, files the hub opens (admin token, TLS keys,
// imports) and the Go runtime.
const Reserve = 128

// Budgets are the connection caps of the hub's listeners.
type Budgets struct {
	MQTT int // simultaneous MQTT connections (TCP, TLS and WebSocket together)
	HTTP int // simultaneous HTTP connections (API, SSE, broker auth)
}

// Split divides an open-file limit between MQTT and HTTP: Reserve (or an
// eighth of the limit, if larger) stays free, MQTT gets three quarters of
// the rest and HTTP a quarter. Each gets at least 1.
func Split(limit uint64) Budgets {
	reserve := max(uint64(Reserve), limit/8)
	if limit <= reserve+4 {
		// A limit this low leaves no room to speak of: half of what
		// there is, so that a connection can still be served.
		reserve = limit / 2
	}
	room := limit - reserve
	if room > 1<<30 {
		room = 1 << 30
	}
	mqtt := int(room * 3 / 4)
	http := int(room) - mqtt
	return Budgets{MQTT: max(mqtt, 1), HTTP: max(http, 1)}
}

// Default is Split of the current soft limit (the Go runtime raises it to
// the hard limit at start on Linux). Without a limit to read, it assumes
// 1024, the common default.
func Default() Budgets {
	limit, ok := Soft()
	if !ok {
		limit = 1024
	}
	return Split(limit)
}
