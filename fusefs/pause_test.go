package fusefs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/fusefs/fusefstest"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
)

// sectorFiles lists the sector files of a backing directory (root only)
// with their sizes.
func sectorFiles(t *testing.T, backing string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(backing)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		if !e.Type().IsRegular() || names.IsReserved(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.Size()
	}
	return out
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPauseFlushesAndHolds: once Pause returns, a write(2) that returned
// before it is in the backing although the writer neither synced nor
// closed; a later write(2) and a create wait until Resume, leaving the
// backing as it was; after Resume both complete. With and without the
// kernel writeback cache.
func TestPauseFlushesAndHolds(t *testing.T) {
	for _, wb := range []bool{true, false} {
		name := "writeback"
		if !wb {
			name = "direct"
		}
		t.Run(name, func(t *testing.T) {
			opts := fusefstest.Options{NoWritebackCache: !wb}
			v := fusefstest.NewVolume(t, opts)
			m := fusefstest.MountVolume(t, v, opts)
			rec := bytes.Repeat([]byte("r"), 128)
			f, err := os.OpenFile(filepath.Join(m.Dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(rec); err != nil {
				t.Fatal(err)
			}
			rep, err := m.FS.Pause(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			resumed := false
			defer func() {
				if !resumed {
					m.FS.Resume(rep.Gen)
				}
			}()
			want := sector.BackingSize(int64(len(rec)), v.SectorSize)
			before := sectorFiles(t, v.Backing)
			if len(before) != 1 {
				t.Fatalf("backing holds %d sector files, want 1: %v", len(before), before)
			}
			for _, sz := range before {
				if sz != want {
					t.Fatalf("after Pause the backing file has %d bytes, want %d: a write(2) that returned before the pause is missing", sz, want)
				}
			}

			wrote := make(chan error, 1)
			go func() { _, err := f.Write(rec); wrote <- err }()
			pollUntil(t, "the write(2) after the pause waits", func() bool { return fusefs.PauseWaiting(m.FS) == 1 })
			created := make(chan error, 1)
			go func() { created <- os.WriteFile(filepath.Join(m.Dir, "new"), rec, 0o600) }()
			pollUntil(t, "the create after the pause waits", func() bool { return fusefs.PauseWaiting(m.FS) == 2 })
			select {
			case err := <-wrote:
				t.Fatalf("write(2) returned during the pause: %v", err)
			case err := <-created:
				t.Fatalf("create returned during the pause: %v", err)
			default:
			}
			if after := sectorFiles(t, v.Backing); len(after) != 1 || after[firstKey(before)] != want {
				t.Fatalf("the backing changed during the pause: %v, was %v", after, before)
			}

			if d, held := m.FS.Resume(rep.Gen + 1); held || d != 0 {
				t.Fatalf("Resume of another pause: held %v", held)
			}
			d, held := m.FS.Resume(rep.Gen)
			resumed = true
			if !held || d <= 0 {
				t.Fatalf("Resume: paused %v, held %v", d, held)
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			if err := <-created; err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(m.Dir, "log"))
			if err != nil || !bytes.Equal(got, append(rec, rec...)) {
				t.Fatalf("log after resume: %d bytes, %v", len(got), err)
			}
		})
	}
}

func firstKey(m map[string]int64) string {
	for k := range m {
		return k
	}
	return ""
}

// TestPauseExclusive: a second pause is refused while one holds, and an
// unmount ends the pause (a later Resume reports it did not hold).
func TestPauseExclusive(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{})
	rep, err := m.FS.Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.FS.Pause(context.Background()); err != fusefs.ErrPaused {
		t.Fatalf("second pause: %v, want ErrPaused", err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the unmount ends the pause", func() bool { return !m.FS.Paused() })
	if _, held := m.FS.Resume(rep.Gen); held {
		t.Fatal("the pause still held after the unmount")
	}
}
