package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
)

// chunkSizes are the row counts of the prepared multi-row statements. A
// batch of n rows runs as a few statements of these sizes, largest first, so
// that a handful of prepared statements serve every batch size without
// re-parsing SQL (a 256-row statement binds at most 256 × 11 variables, far
// below SQLite's limit of 32766).
var chunkSizes = [...]int{256, 64, 16, 4, 1}

// bulk is a statement of the form head + row, row, ... + tail, prepared on
// the writer for each chunk size and reused across batches.
//
// The commit's writes (exec, execCount) run as driver statements on the
// writer's connection, reached through sql.Conn.Raw, with their arguments
// converted into one []driver.NamedValue kept across commits (rawArgs):
// database/sql's Stmt would convert and allocate every argument of every
// execution again (driverArgsConnLocked, ~10 % of the hub's allocated
// bytes under ingest). Queries, fewer and smaller, go through database/sql.
type bulk struct {
	db    *sql.DB
	head  string
	row   string
	tail  string
	cols  int
	stmts [len(chunkSizes)]*sql.Stmt // queries and execTx's writes (prepare)
	// raw are the driver statements of the writes, prepared on the
	// driver connection rawOn when first used there.
	raw   [len(chunkSizes)]driver.StmtExecContext
	rawOn driver.Conn
}

func newBulk(db *sql.DB, head, row, tail string) *bulk {
	return &bulk{db: db, head: head, row: row, tail: tail, cols: strings.Count(row, "?")}
}

// sql is the statement's text for chunkSizes[i] rows.
func (b *bulk) sql(i int) string {
	n := chunkSizes[i]
	var q strings.Builder
	q.Grow(len(b.head) + n*(len(b.row)+1) + len(b.tail))
	q.WriteString(b.head)
	for r := range n {
		if r > 0 {
			q.WriteByte(',')
		}
		q.WriteString(b.row)
	}
	q.WriteString(b.tail)
	return q.String()
}

// prepare prepares the query for every chunk size. It runs before any
// transaction: with one writer connection, preparing on the pool while a
// transaction holds the connection would wait forever.
func (b *bulk) prepare(ctx context.Context) error {
	for i := range chunkSizes {
		st, err := b.db.PrepareContext(ctx, b.sql(i))
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		b.stmts[i] = st
	}
	return nil
}

// prepareRaw prepares the write for every chunk size on the driver
// connection dc (from sql.Conn.Raw on the writer).
func (b *bulk) prepareRaw(ctx context.Context, dc any) error {
	for i := range chunkSizes {
		if _, err := b.rawStmt(ctx, dc, i); err != nil {
			return err
		}
	}
	return nil
}

// rawStmt returns the driver statement for chunkSizes[i] rows on dc,
// preparing it if needed. The writer's pool holds one connection
// (SetMaxOpenConns(1)), so a dc other than rawOn means the pool closed
// rawOn (after a driver.ErrBadConn, or a connection it found unusable):
// the statements prepared there went with it (SQLite keeps a closed
// connection with unfinalized statements as a zombie until they are
// finalized, which the driver can no longer do: their memory is not
// given back) and are prepared again on dc.
func (b *bulk) rawStmt(ctx context.Context, dc any, i int) (driver.StmtExecContext, error) {
	c, ok := dc.(driver.Conn)
	if !ok {
		return nil, fmt.Errorf("sqlite driver connection %T is not a driver.Conn", dc)
	}
	if b.rawOn != c {
		b.raw = [len(chunkSizes)]driver.StmtExecContext{}
		b.rawOn = c
	}
	if b.raw[i] != nil {
		return b.raw[i], nil
	}
	pc, ok := c.(driver.ConnPrepareContext)
	if !ok {
		return nil, fmt.Errorf("sqlite driver connection %T cannot prepare with a context", dc)
	}
	st, err := pc.PrepareContext(ctx, b.sql(i))
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	ex, ok := st.(driver.StmtExecContext)
	if !ok {
		st.Close()
		return nil, fmt.Errorf("sqlite driver statement %T cannot execute with a context", st)
	}
	b.raw[i] = ex
	return ex, nil
}

// exec runs the write over all rows of args in the transaction of t.
func (b *bulk) exec(ctx context.Context, t *txn, args []any) error {
	_, err := b.execCount(ctx, t, args)
	return err
}

// execCount runs the write over all rows of args in the transaction of
// t and returns the rows it changed. It holds the writer's driver
// connection (database/sql's lock of it) while its statements run; t.tx
// runs no statement meanwhile.
func (b *bulk) execCount(ctx context.Context, t *txn, args []any) (int64, error) {
	if len(args) == 0 {
		return 0, nil
	}
	var n int64
	err := t.conn.Raw(func(dc any) error {
		for i, size := range chunkSizes {
			for len(args) >= size*b.cols {
				st, err := b.rawStmt(ctx, dc, i)
				if err != nil {
					return err
				}
				c, err := t.s.rawArgs.exec(ctx, st, args[:size*b.cols])
				if err != nil {
					return err
				}
				n += c
				args = args[size*b.cols:]
			}
		}
		return nil
	})
	return n, err
}

// query runs the statement over all rows of args and calls scan for every
// row it returns.
func (b *bulk) query(ctx context.Context, tx *sql.Tx, args []any, scan func(*sql.Rows) error) error {
	rows := len(args) / b.cols
	for i, n := range chunkSizes {
		for rows >= n {
			// The statement was prepared on the writer's one connection,
			// so database/sql reuses it in the transaction.
			if err := queryStmt(ctx, tx.StmtContext(ctx, b.stmts[i]), args[:n*b.cols], scan); err != nil {
				return err
			}
			args = args[n*b.cols:]
			rows -= n
		}
	}
	return nil
}

// execTx runs the write over all rows of args in tx, a database/sql
// transaction on the writer (the statements prepared by prepare), for
// writes outside the commit (exec runs the commit's).
func (b *bulk) execTx(ctx context.Context, tx *sql.Tx, args []any) error {
	rows := len(args) / b.cols
	for i, n := range chunkSizes {
		for rows >= n {
			if _, err := tx.StmtContext(ctx, b.stmts[i]).ExecContext(ctx, args[:n*b.cols]...); err != nil {
				return err
			}
			args = args[n*b.cols:]
			rows -= n
		}
	}
	return nil
}

func queryStmt(ctx context.Context, st *sql.Stmt, args []any, scan func(*sql.Rows) error) error {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// closeRaw closes the writes' driver statements if dc is the connection
// they were prepared on (see rawStmt for the other case).
func (b *bulk) closeRaw(dc any) {
	if c, ok := dc.(driver.Conn); !ok || c != b.rawOn {
		return
	}
	for i, st := range b.raw {
		if st != nil {
			st.(driver.Stmt).Close()
		}
		b.raw[i] = nil
	}
	b.rawOn = nil
}

func (b *bulk) close() {
	if b == nil {
		return
	}
	for i, st := range b.stmts {
		if st != nil {
			st.Close()
			b.stmts[i] = nil
		}
	}
}

// rawArgs is the argument slice of the writes' driver statements, kept
// across statements and commits (under wmu). The driver binds every
// value into SQLite before ExecContext returns and keeps no reference
// to the slice (modernc.org/sqlite binds text and blobs as copies), so
// it is reused at once; exec clears it so as not to hold payloads.
type rawArgs struct {
	nv []driver.NamedValue
}

// exec runs st with args converted as database/sql would
// (driver.DefaultParameterConverter: the driver checks no value itself)
// and returns the rows it changed.
func (r *rawArgs) exec(ctx context.Context, st driver.StmtExecContext, args []any) (int64, error) {
	if cap(r.nv) < len(args) {
		r.nv = make([]driver.NamedValue, len(args))
	}
	nv := r.nv[:len(args)]
	defer clear(nv)
	for j, a := range args {
		v, err := driverValue(a)
		if err != nil {
			return 0, fmt.Errorf("argument %d: %w", j+1, err)
		}
		nv[j] = driver.NamedValue{Ordinal: j + 1, Value: v}
	}
	res, err := st.ExecContext(ctx, nv)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// driverValue is driver.DefaultParameterConverter.ConvertValue, without
// its reflection for the values the commit passes: those that are
// driver values already, and int.
func driverValue(a any) (driver.Value, error) {
	switch x := a.(type) {
	case nil, int64, float64, bool, []byte, string:
		return a, nil
	case int:
		return int64(x), nil
	}
	return driver.DefaultParameterConverter.ConvertValue(a)
}

// maxArgSlab bounds the values the argument slab keeps between commits
// (16 bytes each: 4 MiB); a larger commit allocates the rest.
const maxArgSlab = 1 << 18

// argSlab lends the argument slices of one commit's multi-row statements
// from one slice kept across commits, so that a commit of 400 messages
// does not allocate its 10,000-odd argument slots anew (garbage the GC
// pays for under load). Only Commit uses it, under wmu; a statement keeps
// no reference to its arguments once it returns.
type argSlab struct {
	buf        []any
	used, want int
}

// take returns an empty slice with room for n values: from the slab
// while it lasts, allocated past its end (the next commit's slab is then
// large enough).
func (a *argSlab) take(n int) []any {
	a.want += n
	if a.used+n > len(a.buf) {
		return make([]any, 0, n)
	}
	b := a.buf[a.used : a.used : a.used+n]
	a.used += n
	return b
}

// reset ends a commit: it drops the references its arguments held
// (payloads, values) and grows the slab to what the commit asked for.
func (a *argSlab) reset() {
	clear(a.buf[:a.used])
	if a.want > len(a.buf) {
		a.buf = make([]any, min(a.want, maxArgSlab))
	}
	a.used, a.want = 0, 0
}
