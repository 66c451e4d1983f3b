package sqlite

import (
	"context"
	"database/sql"
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
// the writer for each chunk size when first used and reused across batches.
type bulk struct {
	db    *sql.DB
	head  string
	row   string
	tail  string
	cols  int
	stmts [len(chunkSizes)]*sql.Stmt
}

func newBulk(db *sql.DB, head, row, tail string) *bulk {
	return &bulk{db: db, head: head, row: row, tail: tail, cols: strings.Count(row, "?")}
}

// prepare prepares the statement for every chunk size. It runs before any
// transaction: with one writer connection, preparing on the pool while a
// transaction holds the connection would wait forever.
func (b *bulk) prepare(ctx context.Context) error {
	for i, n := range chunkSizes {
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
		st, err := b.db.PrepareContext(ctx, q.String())
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		b.stmts[i] = st
	}
	return nil
}

// each calls fn for every chunk of args (cols values per row).
func (b *bulk) each(ctx context.Context, tx *sql.Tx, args []any, fn func(*sql.Stmt, []any) error) error {
	rows := len(args) / b.cols
	for i, n := range chunkSizes {
		for rows >= n {
			// The statement was prepared on the writer's one connection,
			// so database/sql reuses it in the transaction.
			if err := fn(tx.StmtContext(ctx, b.stmts[i]), args[:n*b.cols]); err != nil {
				return err
			}
			args = args[n*b.cols:]
			rows -= n
		}
	}
	return nil
}

// exec runs the statement over all rows of args.
func (b *bulk) exec(ctx context.Context, tx *sql.Tx, args []any) error {
	return b.each(ctx, tx, args, func(st *sql.Stmt, a []any) error {
		_, err := st.ExecContext(ctx, a...)
		return err
	})
}

// execCount runs the statement over all rows of args and returns the
// rows it changed.
func (b *bulk) execCount(ctx context.Context, tx *sql.Tx, args []any) (int64, error) {
	var n int64
	err := b.each(ctx, tx, args, func(st *sql.Stmt, a []any) error {
		res, err := st.ExecContext(ctx, a...)
		if err != nil {
			return err
		}
		c, err := res.RowsAffected()
		n += c
		return err
	})
	return n, err
}

// query runs the statement over all rows of args and calls scan for every
// row it returns.
func (b *bulk) query(ctx context.Context, tx *sql.Tx, args []any, scan func(*sql.Rows) error) error {
	return b.each(ctx, tx, args, func(st *sql.Stmt, a []any) error {
		rows, err := st.QueryContext(ctx, a...)
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
	})
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
