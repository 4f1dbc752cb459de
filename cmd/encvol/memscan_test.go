package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
)

// memNeedle is a key whose plaintext must not stay in the daemon's memory.
type memNeedle struct {
	name string
	key  []byte
}

// memHit is one occurrence of a needle (or of its 16-byte prefix, which is
// also AES-256's first round key) in the daemon's writable memory.
type memHit struct {
	needle string
	prefix bool // only the first 16 bytes matched
	region string
	addr   uint64
}

func (h memHit) String() string {
	what := "full 32 bytes"
	if h.prefix {
		what = "16-byte prefix"
	}
	return fmt.Sprintf("%s (%s) at %#x in %s", h.needle, what, h.addr, h.region)
}

// scanProcessMemory reads every private or shared writable mapping of pid
// through /proc/PID/mem and reports where each needle occurs.
func scanProcessMemory(t *testing.T, pid int, needles []memNeedle) (hits []memHit, scanned int64) {
	t.Helper()
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("read memory map of the daemon: %v", err)
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatalf("open daemon memory: %v", err)
	}
	defer mem.Close()

	const chunk = 1 << 20
	buf := make([]byte, chunk+31)
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 5 || len(f[1]) < 2 || f[1][0] != 'r' || f[1][1] != 'w' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		region := f[0] + " " + f[1]
		if len(f) >= 6 {
			region += " " + f[5]
		} else {
			region += " [anon]"
		}
		for off := start; off < end; off += chunk {
			n := min(uint64(len(buf)), end-off)
			got, err := mem.ReadAt(buf[:n], int64(off))
			if got == 0 && err != nil {
				break // unreadable (e.g. [vvar]); nothing of ours lives there
			}
			scanned += int64(min(uint64(got), chunk))
			data := buf[:got]
			for _, nd := range needles {
				for _, prefix := range []bool{false, true} {
					pat := nd.key
					if prefix {
						pat = nd.key[:16]
					}
					for i := 0; ; {
						j := bytes.Index(data[i:], pat)
						if j < 0 {
							break
						}
						pos := i + j
						i = pos + 1
						// Hits in the overlap belong to the next chunk.
						if pos >= chunk {
							break
						}
						if prefix && pos+32 <= len(data) && bytes.Equal(data[pos:pos+32], nd.key) {
							continue // counted as a full match
						}
						hits = append(hits, memHit{needle: nd.name, prefix: prefix, region: region, addr: off + uint64(pos)})
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return hits, scanned
}

func countHits(hits []memHit, needle string, prefix bool) int {
	n := 0
	for _, h := range hits {
		if h.needle == needle && h.prefix == prefix {
			n++
		}
	}
	return n
}

// TestMemoryScanAfterGateClose: while the gate is open the daemon's memory
// holds the content subkey (the control that proves the scan finds keys);
// once the key is disabled and the gate closed, neither the DK nor any
// subkey may be found in its writable memory.
func TestMemoryScanAfterGateClose(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/memscan")
	backing := e.newVolume("vol", key)
	mnt := e.mount(e.cfg, backing)
	// Some I/O so per-file keys, names and buffers are all in use.
	for i := range 8 {
		p := filepath.Join(mnt, fmt.Sprintf("file-%d", i))
		data := gxRandom(t, 64<<10)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %s: %v", p, err)
		}
	}
	st := e.status(mnt)

	// The test's own copy of the keys, straight from the key store.
	store, err := kms.Open(filepath.Join(e.dir, "kms"), kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	pt, _, err := store.Decrypt(context.Background(), kms.LocalPrincipal, h.WrappedDK, h.EncryptionContext, "")
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	dk, err := keywrap.NewKey(pt)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Close()
	sub, err := keywrap.DeriveSubkeys(dk)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	content, err := keywrap.DeriveSubkey(dk, keywrap.LabelContent, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer content.Close()
	if !bytes.Equal(content.Bytes(), sub.Content.Bytes()) {
		t.Fatal("DeriveSubkey and DeriveSubkeys disagree on the content subkey")
	}
	needles := []memNeedle{
		{"DK", dk.Bytes()},
		{"content subkey", sub.Content.Bytes()},
		{"names subkey", sub.Names.Bytes()},
		{"header MAC subkey", sub.HeaderMAC.Bytes()},
	}

	open, scanned := scanProcessMemory(t, st.PID, needles)
	t.Logf("gate open: scanned %d MiB of daemon pid %d, %d hits", scanned>>20, st.PID, len(open))
	for _, hit := range open {
		t.Logf("  open: %v", hit)
	}
	if countHits(open, "content subkey", false) == 0 {
		t.Fatal("control failed: the content subkey is not found in the daemon's memory while the gate is open, so the scan proves nothing")
	}

	e.must("kms", "disable-key", key)
	// The gate logs "key gate closed" after it has zeroized the keys,
	// collected garbage and returned memory to the OS.
	gxWait(t, "gate closed and keys dropped", 10*time.Second, func() bool {
		if e.status(mnt).Gate != "closed" {
			return false
		}
		b, err := os.ReadFile(st.LogFile)
		return err == nil && gateClosedLogged(b)
	})
	if _, err := os.ReadFile(filepath.Join(mnt, "file-0")); !gxIsEIO(err) {
		t.Fatalf("read after the gate closed: want EIO, got %v", err)
	}

	closed, scanned := scanProcessMemory(t, st.PID, needles)
	t.Logf("gate closed: scanned %d MiB, %d hits", scanned>>20, len(closed))
	for _, hit := range closed {
		t.Logf("  closed: %v", hit)
	}
	for _, nd := range needles {
		if n := countHits(closed, nd.name, false); n > 0 {
			hint := ""
			if !binarySecretMemory(t) {
				// Measured: HKDF-Extract feeds the key to SHA-256 as message
				// data, and the freed digest state keeps it; only
				// runtime/secret erases such heap and stack copies.
				hint = " (this binary lacks runtime/secret (GOEXPERIMENT=runtimesecret, CGO_ENABLED=0), which erases the freed HKDF/SHA-256 state that holds these copies)"
			}
			t.Errorf("%s survives in the daemon's memory after the gate closed (%d copies)%s", nd.name, n, hint)
		}
		if n := countHits(closed, nd.name, true); n > 0 {
			t.Logf("note: the 16-byte prefix of the %s survives %d times (AES-256's first round key is the raw key's first 16 bytes)", nd.name, n)
		}
	}
	e.must("kms", "enable-key", key)
}

// gateClosedLogged reports whether the daemon's JSON log has the gate's
// close line.
func gateClosedLogged(log []byte) bool {
	for _, line := range bytes.Split(log, []byte("\n")) {
		var ev struct {
			Op      string `json:"op"`
			Message string `json:"message"`
		}
		if json.Unmarshal(line, &ev) == nil && ev.Op == "gate-close" && strings.Contains(ev.Message, "key gate closed") {
			return true
		}
	}
	return false
}
