package fusefs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs"
	"github.com/encvol/encvol/fusefs/fusefstest"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGateCloseEIO(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{})
	p := filepath.Join(m.Dir, "f")
	writeFile(t, p, []byte("before"))
	if err := os.Mkdir(filepath.Join(m.Dir, "d"), 0755); err != nil {
		t.Fatal(err)
	}

	m.Gate.Close("test")
	if m.Gate.IsOpen() {
		t.Fatal("gate still open")
	}
	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read after close: %v, want EIO", err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "new"), []byte("x"), 0644); !errors.Is(err, syscall.EIO) {
		t.Fatalf("create after close: %v, want EIO", err)
	}
	if _, err := os.ReadDir(m.Dir); !errors.Is(err, syscall.EIO) {
		t.Fatalf("readdir after close: %v, want EIO", err)
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "d")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("stat after close (entry and attr caches dropped): %v, want EIO", err)
	}
	if c := m.FS.Counters(); c.GateRefusals == 0 {
		t.Fatal("no gate refusals counted")
	}

	m.Gate.Open(v.Keys(t))
	if got := readFile(t, p); string(got) != "before" {
		t.Fatalf("after reopen %q", got)
	}
	writeFile(t, filepath.Join(m.Dir, "new"), []byte("x"))
}

// A file read before the gate closes must not be served from the kernel's
// page cache afterwards, even through a descriptor opened before.
func TestGateCloseDropsPageCache(t *testing.T) {
	for _, wb := range []bool{true, false} {
		name := "writeback"
		if !wb {
			name = "writethrough"
		}
		t.Run(name, func(t *testing.T) {
			m := fusefstest.MountVolume(t, fusefstest.NewVolume(t, fusefstest.Options{}), fusefstest.Options{NoWritebackCache: !wb})
			p := filepath.Join(m.Dir, "cached")
			content := bytes.Repeat([]byte("secret page "), 2000)
			writeFile(t, p, content)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, len(content))
			if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, content) {
				t.Fatalf("first read: %v", err)
			}
			// Second read is a page cache hit: no READ reaches the daemon.
			reads := m.FS.Counters().Reads
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if m.FS.Counters().Reads != reads {
				t.Log("second read was not served from the page cache; the test still checks the close")
			}

			m.Gate.Close("test")
			n, err := f.ReadAt(buf, 0)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read through an open descriptor after close: n=%d err=%v, want EIO", n, err)
			}
			if _, err := f.Stat(); err != nil {
				// fstat may be answered from the open backing descriptor.
				t.Logf("fstat after close: %v", err)
			}
		})
	}
}

func TestGateHangBlocksAndResumes(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	m := fusefstest.MountVolume(t, v, fusefstest.Options{GateMode: fusefs.ModeHang})
	p := filepath.Join(m.Dir, "f")
	writeFile(t, p, []byte("patience"))
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	m.Gate.Close("test")
	refusals := m.Gate.Refusals()
	type result struct {
		data string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b := make([]byte, 64)
		n, err := f.ReadAt(b, 0)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		done <- result{string(b[:n]), err}
	}()
	// The read reached the gate and waits there.
	waitFor(t, "the read to block on the gate", 5*time.Second, func() bool { return m.Gate.Refusals() > refusals })
	select {
	case r := <-done:
		t.Fatalf("read returned while the gate was closed: %+v", r)
	default:
	}
	m.Gate.Open(v.Keys(t))
	select {
	case r := <-done:
		if r.err != nil || r.data != "patience" {
			t.Fatalf("after reopen: %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read did not resume after the gate reopened")
	}
}

func TestGateAcquireInterrupted(t *testing.T) {
	g := fusefs.NewGate(fusefs.ModeHang, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := g.Acquire(ctx)
		errc <- err
	}()
	waitFor(t, "acquire to wait", 5*time.Second, func() bool { return g.Refusals() > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, syscall.EINTR) {
		t.Fatalf("interrupted acquire: %v, want EINTR", err)
	}
	eio := fusefs.NewGate(fusefs.ModeEIO, zerolog.Nop())
	if _, _, err := eio.Acquire(context.Background()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("closed eio gate: %v", err)
	}
}

// Wait holds keyless calls only in hang mode: until the gate opens, or
// with EINTR when the request is interrupted.
func TestGateWait(t *testing.T) {
	if err := fusefs.NewGate(fusefs.ModeEIO, zerolog.Nop()).Wait(context.Background()); err != nil {
		t.Fatalf("closed eio gate: Wait %v, want nil (the call needs no key)", err)
	}
	g := fusefs.NewGate(fusefs.ModeHang, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Wait(ctx) }()
	waitFor(t, "Wait to wait", 5*time.Second, func() bool { return g.Refusals() > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, syscall.EINTR) {
		t.Fatalf("interrupted Wait: %v, want EINTR", err)
	}
	go func() { errc <- g.Wait(context.Background()) }()
	waitFor(t, "Wait to wait again", 5*time.Second, func() bool { return g.Refusals() > 1 })
	g.Open(&fusefs.Keys{})
	if err := <-errc; err != nil {
		t.Fatalf("Wait after Open: %v", err)
	}
}

// Close waits for callers that hold the keys before it closes them.
func TestGateCloseWaitsForInflight(t *testing.T) {
	v := fusefstest.NewVolume(t, fusefstest.Options{})
	g := fusefs.NewGate(fusefs.ModeEIO, zerolog.Nop())
	k := v.Keys(t)
	released := false
	k.Release = func() { released = true }
	g.Open(k)
	got, rel, err := g.Acquire(context.Background())
	if err != nil || got != k {
		t.Fatalf("acquire: %v", err)
	}
	closed := make(chan struct{})
	go func() {
		g.Close("test")
		close(closed)
	}()
	waitFor(t, "the gate to report closed", 5*time.Second, func() bool { return !g.IsOpen() })
	select {
	case <-closed:
		t.Fatal("Close returned while a caller still held the keys")
	default:
	}
	if k.Content.Closed() {
		t.Fatal("cipher closed under an in-flight caller")
	}
	rel()
	<-closed
	if !k.Content.Closed() || !released {
		t.Fatal("keys not closed after the last caller released them")
	}
}
