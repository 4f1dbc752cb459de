package volume

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// The transfer core in process (under the race detector): an import with
// many workers writing files and chunks of one file at once, stopped
// half-way by its context and finished by a second run.

func localKMS(t *testing.T) (kmsclient.Client, kmsclient.Config) {
	t.Helper()
	kc := kmsclient.Config{Type: kmsclient.TypeLocal, Path: filepath.Join(t.TempDir(), "kms")}
	c, err := kmsclient.New(context.Background(), "local", kc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, kc
}

// stopAfter cancels its context once n files are written.
type stopAfter struct {
	NoProgress
	n       int64
	writing atomic.Bool
	done    atomic.Int64
	cancel  context.CancelFunc
}

func (p *stopAfter) Start(phase string, _, _ int64) { p.writing.Store(phase == OpImport) }

func (p *stopAfter) AddFiles(n int64) {
	if p.writing.Load() && p.done.Add(n) >= p.n {
		p.cancel()
	}
}

func TestTransferStoppedAndResumed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the check mounts the result: run as root")
	}
	client, kc := localKMS(t)
	plain := t.TempDir()
	big := make([]byte, 3*chunkSize+12345) // several chunks on several workers
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(plain, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(plain, "big"), filepath.Join(plain, "big-link")); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		dir := filepath.Join(plain, "d"+string(rune('a'+i%7)))
		os.MkdirAll(dir, 0o755)
		b := make([]byte, i*97)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, "f"+strings.Repeat("x", i%40)+string(rune('a'+i%26))+string(rune('0'+i%10))), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	backing := filepath.Join(t.TempDir(), "vol")
	opt := func(p Progress) ImportOptions {
		return ImportOptions{PlainDir: plain, TargetOptions: TargetOptions{
			Target:    CreateOptions{Backing: backing, KMSName: "local"},
			KMSConfig: kc, Workers: 8, Progress: p, Log: zerolog.Nop(),
		}}
	}

	ctx, cancel := context.WithCancel(context.Background())
	stop := &stopAfter{n: 40, cancel: cancel}
	_, err := Import(ctx, client, opt(stop))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("stopped import: %v", err)
	}
	if _, err := ReadMarker(backing); err != nil {
		t.Fatalf("stopped import left no readable marker: %v", err)
	}
	if err := CheckComplete(backing); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("stopped import counts as complete: %v", err)
	}

	rep, err := Import(context.Background(), client, opt(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Resumed || rep.Skipped == 0 || rep.Written == 0 || rep.Checked == 0 {
		t.Fatalf("resumed report %+v", rep)
	}
	if err := CheckComplete(backing); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(backing, keywrap.IncompleteFile)); !os.IsNotExist(err) {
		t.Fatalf("marker left: %v", err)
	}
}

// TestTransferDropsDeadCheckMount: a check mount that a killed run left
// (its daemon gone, so nobody holds the volume's lock) is detached by the
// run that finishes the work.
func TestTransferDropsDeadCheckMount(t *testing.T) {
	client, kc := localKMS(t)
	plain := t.TempDir()
	if err := os.WriteFile(filepath.Join(plain, "f"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(t.TempDir(), "vol")
	opt := ImportOptions{PlainDir: plain, TargetOptions: TargetOptions{
		Target: CreateOptions{Backing: backing, KMSName: "local"}, KMSConfig: kc, Log: zerolog.Nop()}}
	ctx, cancel := context.WithCancel(context.Background())
	opt.Progress = &stopAfter{n: 1, cancel: cancel}
	if _, err := Import(ctx, client, opt); !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped import: %v", err)
	}
	opt.Progress = nil

	dir, err := os.MkdirTemp("", checkMountPrefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	mnt, _ := CanonicalMountpoint(dir)
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	spec := MountSpec{Backing: backing, Mountpoint: mnt, Header: h, KMS: "local", KMSConfig: kc, ReadOnly: true,
		OnRevoke: OnRevokeEIO, KeyCheckInterval: DefaultKeyCheckInterval, OfflineGrace: DefaultOfflineGrace}
	m, err := mountTemporary(context.Background(), spec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Unmount(mnt, unix.MNT_DETACH)
		os.Remove(mnt)
	})
	m.lock.Release() // as if its process had died

	if _, err := Import(context.Background(), client, opt); err != nil {
		t.Fatal(err)
	}
	if ok, _ := IsMounted(mnt); ok {
		t.Fatal("the dead check mount is still there")
	}
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the detached mount's server did not end")
	}
}
