package api

import (
	"context"
	"sync"

	"github.com/devicehub/devicehub/internal/access"
)

// auditBatchAppender is the optional capability of an Audit store to
// store many entries in one transaction.
type auditBatchAppender interface {
	AppendAudits(ctx context.Context, es []access.AuditEntry) error
}

// auditBatcher groups the audit entries of concurrent requests into one
// write: a request that finds no write in progress writes every entry
// queued until none is left (it leads); the others wait for the write of
// theirs. Every request still answers only once its entry is stored, but
// a hundred concurrent requests cost one transaction, not a hundred
// (each one an fsync on SQLite). No goroutine of its own.
type auditBatcher struct {
	store auditBatchAppender

	mu      sync.Mutex
	pending []*auditReq
	writing bool
}

type auditReq struct {
	e    access.AuditEntry
	done chan error
}

// maxAuditBatch bounds one write.
const maxAuditBatch = 512

func (b *auditBatcher) append(ctx context.Context, e access.AuditEntry) error {
	r := &auditReq{e: e, done: make(chan error, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	if b.writing {
		b.mu.Unlock()
		select {
		case err := <-r.done:
			return err
		case <-ctx.Done():
			return ctx.Err() // the leader still writes it
		}
	}
	b.writing = true
	for {
		n := min(len(b.pending), maxAuditBatch)
		batch := b.pending[:n:n]
		b.pending = b.pending[n:]
		b.mu.Unlock()
		es := make([]access.AuditEntry, len(batch))
		for i, q := range batch {
			es[i] = q.e
		}
		err := b.store.AppendAudits(ctx, es)
		for _, q := range batch {
			q.done <- err
		}
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.writing = false
			b.pending = nil
			b.mu.Unlock()
			return <-r.done
		}
	}
}
