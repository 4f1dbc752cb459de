package keywrap

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned when a closed key (or something built from it) is used.
var ErrClosed = errors.New("keywrap: key closed")

// maxKeyLen bounds key sizes so that a bad length cannot turn into a huge
// locked mapping; no key or subkey of the format comes close.
const maxKeyLen = 4096

// Key holds secret bytes outside the Go heap, in an anonymous private mapping
// that is mlock'd (never swapped) and marked MADV_DONTDUMP (never in a core
// file). The garbage collector never moves or copies these bytes, so Close can
// really erase them.
//
// Bytes may be called concurrently with each other; Close waits for nothing, so
// callers must stop using slices from Bytes before they call Close (the key gate
// in fusefs guarantees this for file system calls). A Key that is never closed
// stays mapped and locked until the process exits.
type Key struct {
	mu     sync.RWMutex
	mem    []byte // whole mapping, page-rounded; nil once closed
	n      int
	locked bool
}

// closeHook, when set by tests, sees the mapping after it was zeroized and
// before it is unmapped, so a test can prove the erase happened.
var closeHook func(mem []byte)

// NewKey copies src into a new locked region and then zeroes src, so the
// caller's heap copy does not outlive the hand-over.
func NewKey(src []byte) (*Key, error) {
	k, err := allocKey(len(src))
	if err != nil {
		clear(src)
		return nil, err
	}
	copy(k.mem, src)
	clear(src)
	return k, nil
}

// RandomKey returns a Key of n bytes from crypto/rand, generated directly into
// locked memory.
func RandomKey(n int) (*Key, error) {
	k, err := allocKey(n)
	if err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.mem[:n]); err != nil {
		k.Close()
		return nil, fmt.Errorf("keywrap: random key: %w", err)
	}
	return k, nil
}

func allocKey(n int) (*Key, error) {
	if n <= 0 || n > maxKeyLen {
		return nil, fmt.Errorf("keywrap: key length %d out of range 1..%d", n, maxKeyLen)
	}
	page := os.Getpagesize()
	size := (n + page - 1) / page * page
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("keywrap: mmap %d bytes for key: %w", size, err)
	}
	k := &Key{mem: mem, n: n}
	// Without CAP_IPC_LOCK or with a small RLIMIT_MEMLOCK, mlock fails with
	// EPERM/ENOMEM. The key is still usable and still erased on Close; only
	// the no-swap guarantee is lost, which Locked reports so that a daemon can
	// warn about it.
	if err := unix.Mlock(mem); err == nil {
		k.locked = true
	}
	// MADV_DONTDUMP is best effort for the same reason; DisableCoreDumps is
	// the process-wide guarantee.
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	return k, nil
}

// Bytes returns the key bytes. The slice aliases the locked region: it is valid
// only until Close, must not be appended to, and must not be retained past
// Close. After Close it returns nil.
func (k *Key) Bytes() []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.mem == nil {
		return nil
	}
	return k.mem[:k.n:k.n]
}

// Len returns the key length in bytes (also after Close).
func (k *Key) Len() int { return k.n }

// Locked reports whether the key's memory is mlock'd (cannot be swapped out).
func (k *Key) Locked() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.locked && k.mem != nil
}

// Closed reports whether Close has run.
func (k *Key) Closed() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.mem == nil
}

// Close zeroizes the key bytes, unlocks and unmaps the region. It is
// idempotent and safe to call on a nil Key.
func (k *Key) Close() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mem == nil {
		return
	}
	zeroize(k.mem)
	if closeHook != nil {
		closeHook(k.mem)
	}
	if k.locked {
		_ = unix.Munlock(k.mem)
	}
	_ = unix.Munmap(k.mem)
	k.mem = nil
	k.locked = false
}

// zeroize overwrites b with zeros. clear is a compiler intrinsic whose stores
// are not elided for memory the compiler cannot see being dead (it is an mmap
// region reached through a slice header).
func zeroize(b []byte) {
	clear(b)
}

// DisableCoreDumps stops the process from writing core files (RLIMIT_CORE 0)
// and marks it non-dumpable (PR_SET_DUMPABLE 0), which also keeps other
// non-root users from ptrace-attaching or reading /proc/PID/mem. Call it early
// in a daemon that will hold keys.
func DisableCoreDumps() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("keywrap: disable core dumps: setrlimit RLIMIT_CORE: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("keywrap: disable core dumps: prctl PR_SET_DUMPABLE: %w", err)
	}
	return nil
}
