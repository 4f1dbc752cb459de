package fusefs_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/fusefs/fusefstest"
)

// holdFS is a loopback file system whose lookups wait while it is held:
// a backing file system that stopped answering, as a dead network file
// system or a daemon reaching its own mount does.
type holdFS struct {
	mu      sync.Mutex
	held    bool
	release chan struct{}
	waiting atomic.Int32
	names   map[string]int // GUARDED_BY(mu): names of the lookups held, for failure messages
}

func (h *holdFS) hold() {
	h.mu.Lock()
	h.held, h.release = true, make(chan struct{})
	h.mu.Unlock()
}

func (h *holdFS) unhold() {
	h.mu.Lock()
	if h.held {
		h.held = false
		close(h.release)
	}
	h.mu.Unlock()
}

func (h *holdFS) wait(name string) {
	h.mu.Lock()
	held, ch := h.held, h.release
	if held {
		if h.names == nil {
			h.names = map[string]int{}
		}
		h.names[name]++
	}
	h.mu.Unlock()
	if held {
		h.waiting.Add(1)
		<-ch
		h.waiting.Add(-1)
	}
}

// heldNames lists the names of the lookups held so far.
func (h *holdFS) heldNames() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.names)
}

type holdNode struct {
	*fs.LoopbackNode
	h *holdFS
}

var _ = (fs.NodeLookuper)((*holdNode)(nil))
var _ = (fs.NodeWrapChilder)((*holdNode)(nil))

func (n *holdNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.h.wait(name)
	return n.LoopbackNode.Lookup(ctx, name, out)
}

func (n *holdNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &holdNode{LoopbackNode: ops.(*fs.LoopbackNode), h: n.h}
}

// mountHoldFS mounts a holdFS over a new directory and returns its
// mountpoint.
func mountHoldFS(t *testing.T, h *holdFS) string {
	t.Helper()
	root, err := fs.NewLoopbackRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	srv, err := fs.Mount(mnt, &holdNode{LoopbackNode: root.(*fs.LoopbackNode), h: h}, &fs.Options{MountOptions: fuse.MountOptions{DirectMount: true, FsName: "holdfs"}})
	if err != nil {
		t.Fatalf("mount the holding file system: %v", err)
	}
	t.Cleanup(func() {
		h.unhold()
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount the holding file system: %v", err)
		}
	})
	return mnt
}

// fuseWaiting is the number of requests the kernel has queued or sent on
// the FUSE connection of mnt and not seen answered.
func fuseWaiting(t *testing.T, mnt string) int {
	t.Helper()
	dev, err := mountDevice(mnt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/waiting", unix.Minor(dev)))
	if err != nil {
		t.Fatalf("FUSE control file system (mount -t fusectl none /sys/fs/fuse/connections): %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mountDevice reads the device number of the mount at mnt from the mount
// table; a stat of mnt itself would wait on the held requests.
func mountDevice(mnt string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == mnt {
			var maj, min uint32
			if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil {
				return 0, err
			}
			return unix.Mkdev(maj, min), nil
		}
	}
	return 0, fmt.Errorf("%s is not in the mount table", mnt)
}

func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

// TestRequestsBounded: while the backing file system does not answer,
// every request the daemon serves waits in a system call on one OS thread.
// The daemon serves a bounded number at once, so 200 waiting clients cost
// it at most that many threads (unbounded, they cost 200 and a few
// thousand would kill it), and all of them complete once the backing
// answers again.
func TestRequestsBounded(t *testing.T) {
	const limit, clients = 16, 200
	h := &holdFS{}
	mnt, _, _ := fusefstest.MountTemp(t, fusefstest.Options{BackingParent: mountHoldFS(t, h), MaxRequests: limit})
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := threads(t)

	h.hold()
	script := `i=0; while [ $i -lt ` + strconv.Itoa(clients) + ` ]; do stat -- "$0/d/f$i" >/dev/null 2>&1 & i=$((i+1)); done; wait`
	cmd := exec.Command("sh", "-c", script, mnt)
	if err := cmd.Start(); err != nil {
		h.unhold()
		t.Fatal(err)
	}
	defer func() {
		h.unhold()
		if err := cmd.Wait(); err != nil {
			t.Errorf("stat clients: %v", err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for fuseWaiting(t, mnt) < clients || int(h.waiting.Load()) < limit {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d requests waiting on the mount, %d held in the backing; want %d and %d", fuseWaiting(t, mnt), h.waiting.Load(), clients, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := int(h.waiting.Load()); got > limit {
		t.Errorf("%d backing calls in progress, want at most %d; lookups held (backing name: count): %v", got, limit, h.heldNames())
	}
	// The readers that feed requests and the runtime's own threads come on
	// top of the limit; 200 waiting clients must not.
	if got := threads(t); got > base+limit+24 {
		t.Errorf("%d threads with %d clients waiting (%d before): the daemon does not bound its requests", got, clients, base)
	}
}
