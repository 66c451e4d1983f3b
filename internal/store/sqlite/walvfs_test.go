package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// walTestBatch is one message with one reading for each of devices
// devices, ids from *id on.
func walTestBatch(devices int, id *int64) []*commit.Change {
	now := time.Now()
	batch := make([]*commit.Change, devices)
	for d := range batch {
		*id++
		m := &readings.Message{ID: *id, Topic: "devices/x/data", Transport: "mqtt", QoS: 1,
			Payload: []byte(`{"t":1}`), MsgID: fmt.Sprintf("m-%d", *id), Accepted: true, ReceivedAt: now}
		batch[d] = &commit.Change{DeviceID: fmt.Sprintf("w-%04d", d),
			Ops: withReadings(m, []readings.Reading{{Time: now, Values: []byte(`{"t":1}`)}}, &registry.DevicePatch{LastSeen: &now})}
	}
	return batch
}

// walTestDevices provisions devices devices.
func walTestDevices(t *testing.T, s *Store, devices int) {
	t.Helper()
	var batch []*commit.Change
	for d := range devices {
		id := fmt.Sprintf("w-%04d", d)
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{Type: "T",
			MQTTUsername: id, PasswordHash: []byte{1}, APIKeyHash: []byte{2}, CreatedAt: time.Now()}}})
	}
	commitAll(t, s, batch)
}

// TestWALWritesGathered: with synchronous=full the writer's commit of 300
// devices' messages, which SQLite writes as two writes per dirty page,
// reaches the file in a few writes of up to walWriteMax bytes; with
// synchronous=normal (and plainWAL) the WAL is written as SQLite writes
// it. On Linux the commits' syncs are fdatasyncs. Readers see every commit at once either way.
func TestWALWritesGathered(t *testing.T) {
	for _, tt := range []struct {
		name     string
		opts     Options
		gathered bool
	}{
		{"full", Options{Synchronous: "full"}, true},
		{"normal", Options{Synchronous: "normal"}, false},
		{"full, plain WAL", Options{Synchronous: "full", plainWAL: true}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			tt.opts.Path = filepath.Join(t.TempDir(), "hub.db")
			s, err := Open(ctx, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const devices = 300
			walTestDevices(t, s, devices)
			var id int64
			for round := 1; round <= 3; round++ {
				w0, c0, d0 := walWrites.Load(), walSyscalls.Load(), walDataSyncs.Load()
				commitAll(t, s, walTestBatch(devices, &id))
				writes, calls, datasyncs := walWrites.Load()-w0, walSyscalls.Load()-c0, walDataSyncs.Load()-d0
				// On Linux the commit's sync is an fdatasync (the
				// first sync of the new WAL, with its directory's, is
				// the unix VFS's: before these rounds).
				if want := tt.gathered && runtime.GOOS == "linux"; (datasyncs > 0) != want {
					t.Fatalf("round %d: %d fdatasyncs, want them: %v", round, datasyncs, want)
				}
				if tt.gathered {
					// Tens of pages (the message batch row,
					// readings and their index, the devices'
					// rows), two writes each.
					if writes < 20 {
						t.Fatalf("round %d: %d WAL writes through the VFS, want ≥ 20", round, writes)
					}
					if max := writes * 4096 / walWriteMax; calls > max+2 {
						t.Fatalf("round %d: %d writes reached the file for %d WAL writes, want ≤ %d", round, calls, writes, max+2)
					}
				} else if writes != 0 {
					t.Fatalf("round %d: %d WAL writes through the VFS, want none", round, writes)
				}
				n, err := s.CountReadings(ctx, "w-0007")
				if err != nil || n != int64(round) {
					t.Fatalf("round %d: readings of w-0007 seen by a reader: %d, %v", round, n, err)
				}
			}
		})
	}
}

// TestWALDiskFull: when the file system fills up while a commit's frames
// are gathered, the commit fails with the disk-full error (at its sync,
// where the frames are written) and loses nothing committed before it;
// with space again, the store commits and every committed reading is
// there once. The database is on a tmpfs of its own (root only).
func TestWALDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=3m"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	ctx := context.Background()
	path := filepath.Join(mnt, "hub.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	const devices = 200
	walTestDevices(t, s, devices)
	var id int64
	committed := 0
	var full error
	for range 1000 {
		err := s.Commit(ctx, walTestBatch(devices, &id))
		if err != nil {
			full = err
			break
		}
		committed++
	}
	if full == nil {
		t.Fatal("3 MiB of tmpfs never filled")
	}
	if !errors.Is(full, syscall.ENOSPC) && !strings.Contains(full.Error(), "full") {
		t.Fatalf("commit on a full disk: %v, want a disk-full error", full)
	}
	t.Logf("%d batches committed, then: %v", committed, full)
	s.Close()

	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	if s, err = Open(ctx, Options{Path: path}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	commitAll(t, s, walTestBatch(devices, &id))
	for _, dev := range []string{"w-0000", "w-0199"} {
		n, err := s.CountReadings(ctx, dev)
		if err != nil || n != int64(committed+1) {
			t.Fatalf("readings of %s after the disk filled and a commit: %d, %v; want %d", dev, n, err, committed+1)
		}
	}
	seen := map[int64]bool{}
	for _, r := range headRecords(t, s) {
		if seen[r.MessageID] {
			t.Fatalf("reading of message %d stored twice", r.MessageID)
		}
		seen[r.MessageID] = true
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
