package keywrap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestNewKeyCopiesAndZeroesSource(t *testing.T) {
	src := []byte("0123456789abcdef0123456789abcdef")
	want := append([]byte(nil), src...)
	k, err := NewKey(src)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if !bytes.Equal(k.Bytes(), want) {
		t.Fatalf("key bytes %x, want %x", k.Bytes(), want)
	}
	if !bytes.Equal(src, make([]byte, len(src))) {
		t.Fatalf("source not zeroed: %x", src)
	}
	if k.Len() != 32 {
		t.Fatalf("Len = %d", k.Len())
	}
}

func TestKeyLengthLimits(t *testing.T) {
	for _, n := range []int{0, -1, maxKeyLen + 1} {
		if k, err := RandomKey(n); err == nil {
			k.Close()
			t.Errorf("RandomKey(%d) succeeded", n)
		}
	}
	if _, err := NewKey(nil); err == nil {
		t.Error("NewKey(nil) succeeded")
	}
}

// TestCloseZeroes looks at the mapping after Close erased it and before it is
// unmapped; reading it afterwards would fault.
func TestCloseZeroes(t *testing.T) {
	k, err := RandomKey(64)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k.Bytes(), make([]byte, 64)) {
		t.Fatal("random key is all zero")
	}
	var seen []byte
	closeHook = func(mem []byte) { seen = append([]byte(nil), mem...) }
	defer func() { closeHook = nil }()
	k.Close()
	if seen == nil {
		t.Fatal("close hook not called")
	}
	if !bytes.Equal(seen, make([]byte, len(seen))) {
		t.Fatalf("mapping not zeroed on Close")
	}
	if b := k.Bytes(); b != nil {
		t.Fatalf("Bytes after Close = %x, want nil", b)
	}
	if !k.Closed() || k.Locked() {
		t.Fatal("Closed/Locked wrong after Close")
	}
	seen = nil
	k.Close() // idempotent: no second erase, no double munmap
	if seen != nil {
		t.Fatal("second Close touched the mapping again")
	}
	var nilKey *Key
	nilKey.Close()
}

// TestKeyMappingFlags checks with the kernel's own view (/proc/self/smaps)
// that the key page is locked and excluded from core dumps.
func TestKeyMappingFlags(t *testing.T) {
	k, err := RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	addr := uintptr(unsafe.Pointer(&k.Bytes()[0]))
	flags, lockedKB := smapsFor(t, addr)
	t.Logf("VmFlags: %s; Locked: %d kB", flags, lockedKB)
	if !strings.Contains(" "+flags+" ", " dd ") {
		t.Errorf("VmFlags %q lack dd (MADV_DONTDUMP)", flags)
	}
	if os.Geteuid() == 0 {
		if !k.Locked() {
			t.Error("running as root but key not mlock'd")
		}
		if !strings.Contains(" "+flags+" ", " lo ") || lockedKB == 0 {
			t.Errorf("VmFlags %q / Locked %d kB: mapping not locked", flags, lockedKB)
		}
	}
}

func smapsFor(t *testing.T, addr uintptr) (flags string, lockedKB int) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	found := false
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 {
			in = addr >= lo && addr < hi
			found = found || in
			continue
		}
		if !in {
			continue
		}
		if v, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			flags = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Locked:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &lockedKB)
		}
	}
	if !found {
		t.Fatalf("mapping for %#x not in /proc/self/smaps", addr)
	}
	return flags, lockedKB
}

func TestKeyConcurrentBytes(t *testing.T) {
	k, err := RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), k.Bytes()...)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if !bytes.Equal(k.Bytes(), want) {
					t.Error("concurrent Bytes changed")
					return
				}
			}
		})
	}
	wg.Wait()
	k.Close()
}

func TestDisableCoreDumps(t *testing.T) {
	// Run in a child process: the change is process-wide and irreversible.
	if os.Getenv("ENCVOL_TEST_COREDUMP_CHILD") == "1" {
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDisableCoreDumpsChild$", "-test.v")
	cmd.Env = append(os.Environ(), "ENCVOL_TEST_COREDUMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "core dumps off") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestDisableCoreDumpsChild(t *testing.T) {
	if os.Getenv("ENCVOL_TEST_COREDUMP_CHILD") != "1" {
		return // only meaningful as the child of TestDisableCoreDumps
	}
	if err := DisableCoreDumps(); err != nil {
		t.Fatal(err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &rl); err != nil {
		t.Fatal(err)
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rl.Cur != 0 || rl.Max != 0 || d != 0 {
		t.Fatalf("rlimit core %d/%d dumpable %d", rl.Cur, rl.Max, d)
	}
	t.Log("core dumps off")
}

func TestDeriveSubkeys(t *testing.T) {
	dk, err := RandomKey(32)
	if err != nil {
		t.Fatal(err)
	}
	s, err := DeriveSubkeys(dk)
	if err != nil {
		t.Fatal(err)
	}
	keys := [][]byte{dk.Bytes(), s.Content.Bytes(), s.Names.Bytes(), s.HeaderMAC.Bytes()}
	for i := range keys {
		if len(keys[i]) != 32 {
			t.Fatalf("key %d has %d bytes", i, len(keys[i]))
		}
		for j := range i {
			if bytes.Equal(keys[i], keys[j]) {
				t.Fatalf("keys %d and %d equal", i, j)
			}
		}
	}
	// Deterministic: same DK, same label → same subkey.
	again, err := DeriveSubkey(dk, LabelNames, 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), s.Names.Bytes()) {
		t.Fatal("derivation not deterministic")
	}
	again.Close()
	s.Close()
	s.Close()
	if s.Content.Bytes() != nil {
		t.Fatal("subkey readable after Close")
	}
	dk.Close()
	if _, err := DeriveSubkey(dk, LabelContent, 32); !errors.Is(err, ErrClosed) {
		t.Fatalf("derive from closed key: %v, want ErrClosed", err)
	}
	if _, err := DeriveSubkeys(dk); !errors.Is(err, ErrClosed) {
		t.Fatalf("DeriveSubkeys from closed key: %v", err)
	}
}
