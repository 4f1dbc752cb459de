package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/volume"
)

// End-to-end tests of snapshots through the real binary, on the embedded
// KMS and on `encvol kms serve`: a writer that keeps writing while
// snapshots are taken, read-only snapshot mounts, restore, refusal under a
// disabled key, and volumes made from snapshots.

// envSnapshotWriter makes the test binary run snapshotWriter (TestMain).
const envSnapshotWriter = "ENCVOL_TEST_SNAPSHOT_WRITER"

const (
	recordSize = 128 // divides the page size: the page cache never splits a record
	fileEvery  = 50  // every this many records the writer also makes a file
	fileSize   = 300
)

// record is the writer's record number i: fixed bytes, so any torn or
// misplaced byte shows.
func record(i int) []byte {
	b := bytes.Repeat([]byte{byte('a' + i%26)}, recordSize)
	copy(b, fmt.Sprintf("rec %08d ", i))
	b[recordSize-1] = '\n'
	return b
}

func numberedContent(i int) []byte {
	b := bytes.Repeat([]byte{byte('A' + i%26)}, fileSize)
	copy(b, fmt.Sprintf("file %08d ", i))
	return b
}

// snapshotWriter appends records to DIR/log (O_APPEND, one write(2) each)
// and every fileEvery records writes the file DIR/n/<i>, until SIGTERM.
// After each completed write(2) (for files: after close) it logs "R i ns"
// or "F i ns" with the wall clock in nanoseconds on standard output.
func snapshotWriter(dir string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	fail := func(err error) int {
		out.Flush()
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 1
	}
	f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "n"), 0o700); err != nil {
		return fail(err)
	}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return 0
		default:
		}
		if _, err := f.Write(record(i)); err != nil {
			return fail(err)
		}
		fmt.Fprintf(out, "R %d %d\n", i, time.Now().UnixNano())
		if i%fileEvery == 0 {
			if err := os.WriteFile(filepath.Join(dir, "n", fmt.Sprintf("%08d", i)), numberedContent(i), 0o600); err != nil {
				return fail(err)
			}
			fmt.Fprintf(out, "F %d %d\n", i, time.Now().UnixNano())
		}
		if i%64 == 63 {
			// Pacing, so the log stays a few MB per second.
			time.Sleep(time.Millisecond)
		}
	}
}

type writerProc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	errb bytes.Buffer
}

func startWriter(t *testing.T, dir string) *writerProc {
	t.Helper()
	w := &writerProc{cmd: exec.Command(os.Args[0])}
	w.cmd.Env = append(os.Environ(), envSnapshotWriter+"="+dir)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.errb
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			w.cmd.Process.Kill()
			w.cmd.Wait()
		}
	})
	return w
}

// stop ends the writer and returns the completion times it logged, per
// kind ("R", "F") and number.
func (w *writerProc) stop(t *testing.T) map[string]map[int]int64 {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("writer: %v: %s", err, w.errb.String())
	}
	logged := map[string]map[int]int64{"R": {}, "F": {}}
	for _, line := range strings.Split(strings.TrimSpace(w.out.String()), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("writer log line %q", line)
		}
		i, _ := strconv.Atoi(f[1])
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		logged[f[0]][i] = ns
	}
	return logged
}

type snapJSON struct {
	ID       string     `json:"id"`
	Path     string     `json:"path"`
	Method   string     `json:"method"`
	PausedMS float64    `json:"paused_ms"`
	PausedAt *time.Time `json:"paused_at"`
	Mounted  string     `json:"mounted"`
	Entries  int        `json:"entries"`
}

func (e *gxEnv) snapshot(args ...string) snapJSON {
	e.t.Helper()
	r := e.must(append([]string{"snapshot", "create"}, append(args, "--json")...)...)
	var s snapJSON
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Path == "" || s.ID == "" {
		e.t.Fatalf("snapshot create --json: %v: %s", err, r)
	}
	if s.Method != volume.MethodReflink && s.Method != volume.MethodCopy {
		e.t.Fatalf("snapshot method %q", s.Method)
	}
	return s
}

// mountSnapshot mounts snapshot path (read-only by itself) on a new
// directory and returns it; it is unmounted when the test ends.
func (e *gxEnv) mountSnapshot(path, name string) string {
	e.t.Helper()
	mnt := filepath.Join(e.dir, name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { gxUnmount(e.t, mnt) })
	e.must("mount", path, mnt)
	return mnt
}

func (e *gxEnv) unmount(mnt string) {
	e.t.Helper()
	e.must("umount", mnt)
}

// TestSnapshotWhileWriting: a writer appends records and writes files
// through the mount, logging each completed write(2), while snapshots are
// taken. Each snapshot holds every record and file logged before its pause
// began, whole, and nothing torn: the log is a run of intact records, every
// file present is complete or empty, and the snapshot verifies.
func TestSnapshotWhileWriting(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			backing := e.newVolume("vol", e.createKey("alias/snapw"))
			mnt := e.mount(e.cfg, backing)
			w := startWriter(t, mnt)
			logSize := func() int64 {
				st, err := os.Stat(filepath.Join(mnt, "log"))
				if err != nil {
					return 0
				}
				return st.Size()
			}
			var snaps []snapJSON
			for k := 0; k < 3; k++ {
				before := logSize()
				gxWait(t, "the writer writes", 30*time.Second, func() bool { return logSize() > before+64*recordSize })
				s := e.snapshot(backing)
				if s.PausedAt == nil || s.PausedMS <= 0 || s.Mounted == "" {
					t.Fatalf("snapshot of a mounted volume reports no pause: %+v", s)
				}
				snaps = append(snaps, s)
			}
			logged := w.stop(t)
			e.unmount(mnt)
			for k, s := range snaps {
				t.Logf("snapshot %d: %s, writes paused %.1f ms", k, s.Method, s.PausedMS)
				sm := e.mountSnapshot(s.Path, fmt.Sprintf("s%d", k))
				checkWriterSnapshot(t, sm, s, logged)
				e.unmount(sm)
			}
			r := e.must("verify", snaps[len(snaps)-1].Path, "--json")
			if !strings.Contains(r.stdout, `"pass": true`) {
				t.Fatalf("verify of the last snapshot: %s", r)
			}
		})
	}
}

// checkWriterSnapshot checks a mounted snapshot s against the writer's log.
func checkWriterSnapshot(t *testing.T, mnt string, s snapJSON, logged map[string]map[int]int64) {
	t.Helper()
	pause := s.PausedAt.UnixNano()
	data, err := os.ReadFile(filepath.Join(mnt, "log"))
	if err != nil {
		t.Fatalf("snapshot %s: read log: %v", s.ID, err)
	}
	if len(data)%recordSize != 0 {
		t.Fatalf("snapshot %s: log of %d bytes ends in a torn record", s.ID, len(data))
	}
	n := len(data) / recordSize
	for i := 0; i < n; i++ {
		if got := data[i*recordSize : (i+1)*recordSize]; !bytes.Equal(got, record(i)) {
			t.Fatalf("snapshot %s: record %d is torn or misplaced: %q", s.ID, i, got)
		}
	}
	before := 0
	for i, ns := range logged["R"] {
		if ns < pause {
			before++
			if i >= n {
				t.Fatalf("snapshot %s: record %d was written before the pause (%s before it) but the snapshot has only %d records",
					s.ID, i, time.Duration(pause-ns), n)
			}
		}
	}
	if before == 0 {
		t.Fatalf("snapshot %s: no record was logged before its pause; the test proves nothing", s.ID)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "n"))
	if err != nil {
		t.Fatal(err)
	}
	present := map[int]bool{}
	for _, de := range ents {
		i, err := strconv.Atoi(de.Name())
		if err != nil {
			t.Fatalf("snapshot %s: unexpected file n/%s", s.ID, de.Name())
		}
		b, err := os.ReadFile(filepath.Join(mnt, "n", de.Name()))
		if err != nil {
			t.Fatalf("snapshot %s: read n/%s: %v", s.ID, de.Name(), err)
		}
		if !bytes.HasPrefix(numberedContent(i), b) || (len(b) != 0 && len(b) != fileSize) {
			t.Fatalf("snapshot %s: file n/%s is torn: %d bytes", s.ID, de.Name(), len(b))
		}
		present[i] = len(b) == fileSize
	}
	for i, ns := range logged["F"] {
		if ns < pause && !present[i] {
			t.Fatalf("snapshot %s: file n/%08d was written and closed before the pause but is missing or empty", s.ID, i)
		}
	}
	t.Logf("snapshot %s: %d records (%d logged before the pause), %d files", s.ID, n, before, len(ents))
}

// canaryFiles writes a file whose name and content are canaries into mnt.
func canaryFiles(t *testing.T, mnt string) (name, content string) {
	t.Helper()
	name = "secret-name-" + fmt.Sprintf("%x", gxRandom(t, 6))
	content = strings.Repeat("canary-content-"+fmt.Sprintf("%x", gxRandom(t, 6))+" ", 400)
	if err := os.MkdirAll(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "d", name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return name, content
}

// noPlaintext fails when a name or a file under dir holds name, or a file
// holds 32 bytes of content.
func noPlaintext(t *testing.T, dir, name, content string) {
	t.Helper()
	probe := []byte(content[:32])
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), name) {
			t.Errorf("plaintext name in %s", p)
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, []byte(name)) || bytes.Contains(b, probe) {
				t.Errorf("plaintext in %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotMount: a snapshot mounts read-only next to its mounted
// volume and shows the old state after the volume changed; writes fail
// with EROFS; it verifies, lists as mounted, cannot be deleted while
// mounted, holds no plaintext, and is deleted once unmounted.
func TestSnapshotMount(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			backing := e.newVolume("vol", e.createKey("alias/snapm"))
			mnt := e.mount(e.cfg, backing)
			orig := gxRandom(t, 300_000)
			if err := os.WriteFile(filepath.Join(mnt, "f"), orig, 0o600); err != nil {
				t.Fatal(err)
			}
			name, content := canaryFiles(t, mnt)
			r := e.must("snapshot", "create", backing, "--name", "before")
			if !strings.Contains(r.stdout, "method:") || !strings.Contains(r.stdout, "writes paused") {
				t.Errorf("snapshot create says nothing of its method or pause:\n%s", r.stdout)
			}
			snap := filepath.Join(backing+".snapshots", "before")
			noPlaintext(t, snap, name, content)

			if err := os.WriteFile(filepath.Join(mnt, "f"), gxRandom(t, 1000), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(mnt, "d", name)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("new"), 0o600); err != nil {
				t.Fatal(err)
			}

			sm := e.mountSnapshot(snap, "snapmnt")
			if got, err := os.ReadFile(filepath.Join(sm, "f")); err != nil || !bytes.Equal(got, orig) {
				t.Fatalf("snapshot does not hold f as it was: %v", err)
			}
			if got, err := os.ReadFile(filepath.Join(sm, "d", name)); err != nil || string(got) != content {
				t.Fatalf("snapshot lost a file removed after it was taken: %v", err)
			}
			if _, err := os.Stat(filepath.Join(sm, "new")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("snapshot shows a file made after it was taken: %v", err)
			}
			for what, err := range map[string]error{
				"create":    os.WriteFile(filepath.Join(sm, "x"), []byte("x"), 0o600),
				"overwrite": os.WriteFile(filepath.Join(sm, "f"), []byte("x"), 0o600),
				"mkdir":     os.Mkdir(filepath.Join(sm, "dir"), 0o700),
				"remove":    os.Remove(filepath.Join(sm, "f")),
			} {
				if !errors.Is(err, syscall.EROFS) {
					t.Errorf("%s in a snapshot mount: %v, want EROFS", what, err)
				}
			}
			if st := e.status(sm); !st.ReadOnly || st.Snapshot != snap {
				t.Errorf("status of the snapshot mount: read_only %v, snapshot %q", st.ReadOnly, st.Snapshot)
			}
			if got, err := os.ReadFile(filepath.Join(mnt, "new")); err != nil || string(got) != "new" {
				t.Fatalf("the volume stopped working while its snapshot is mounted: %v", err)
			}

			r = e.must("verify", snap, "--json")
			var rep volume.VerifyReport
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || !rep.Pass {
				t.Fatalf("verify of the snapshot: %v\n%s", err, r)
			}
			var list []volume.SnapshotInfo
			if err := json.Unmarshal([]byte(e.must("snapshot", "list", backing, "--json").stdout), &list); err != nil ||
				len(list) != 1 || list[0].Path != snap || list[0].Mounted != sm {
				t.Fatalf("snapshot list: %v %+v", err, list)
			}
			r = e.runWith(e.cfg, "snapshot", "delete", backing, snap)
			if r.code != exitMounted || !strings.Contains(r.stderr, "is mounted on "+sm) {
				t.Fatalf("delete of a mounted snapshot: want exit %d naming the mount: %v", exitMounted, r)
			}
			oneLine(t, "delete of a mounted snapshot", r.stderr)
			e.unmount(sm)
			e.must("snapshot", "delete", backing, "before")
			if _, err := os.Stat(snap); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("snapshot still there after delete: %v", err)
			}
			if r := e.must("snapshot", "list", backing, "--json"); strings.TrimSpace(r.stdout) != "[]" {
				t.Fatalf("list after delete: %s", r.stdout)
			}
		})
	}
}

// TestSnapshotRestore: restore is refused while the volume is mounted,
// puts the unmounted volume back to the snapshot, refuses a tampered
// manifest and another volume's snapshot, and keeps the volume as it was
// when it fails part-way (the restored copy does not fit).
func TestSnapshotRestore(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			key := e.createKey("alias/snapr")
			small := filepath.Join(e.dir, "small")
			if err := os.Mkdir(small, 0o755); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, small, "12m")
			backing := filepath.Join(small, "vol")
			snaps := filepath.Join(e.dir, "snaps")
			cfgText, err := os.ReadFile(e.cfg)
			if err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(e.dir, "restore.toml")
			body := fmt.Sprintf("%s\n[volumes.v]\nbacking = %q\nsnapshots = %q\n", cfgText, backing, snaps)
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			e.mustWith(cfg, "create", "v", "--key", key)
			mnt := e.mount(cfg, backing)
			first := gxRandom(t, 4<<20)
			if err := os.WriteFile(filepath.Join(mnt, "a"), first, 0o600); err != nil {
				t.Fatal(err)
			}
			snap := filepath.Join(snaps, "s1")
			e.mustWith(cfg, "snapshot", "create", "v", "--name", "s1")
			second := gxRandom(t, 5<<20)
			if err := os.WriteFile(filepath.Join(mnt, "b"), second, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mnt, "a"), []byte("changed"), 0o600); err != nil {
				t.Fatal(err)
			}

			r := e.runWith(cfg, "snapshot", "restore", "v", "s1")
			if r.code != exitMounted || !strings.Contains(r.stderr, "unmount it first") {
				t.Fatalf("restore onto a mounted volume: want exit %d: %v", exitMounted, r)
			}
			oneLine(t, "restore onto a mounted volume", r.stderr)
			e.unmount(mnt)

			// The copy (4 MiB) does not fit beside the current state
			// (about 5 MiB) in 12 MiB... once 4 more MiB are taken.
			filler := filepath.Join(small, "filler")
			if err := os.WriteFile(filler, make([]byte, 4<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			r = e.runWith(cfg, "snapshot", "restore", "v", "s1")
			if r.code == 0 || !strings.Contains(r.stderr, "the volume is unchanged") {
				t.Fatalf("restore that cannot fit: %v", r)
			}
			for _, suf := range []string{".restore-partial", ".restore-ready", ".restore-old"} {
				if _, err := os.Lstat(backing + suf); err == nil {
					t.Errorf("a failed restore left %s", backing+suf)
				}
			}
			os.Remove(filler)
			mnt2 := filepath.Join(e.dir, "m2")
			os.Mkdir(mnt2, 0o755)
			t.Cleanup(func() { gxUnmount(t, mnt2) })
			e.mustWith(cfg, "mount", backing, mnt2)
			if got, err := os.ReadFile(filepath.Join(mnt2, "b")); err != nil || !bytes.Equal(got, second) {
				t.Fatalf("the volume changed after a failed restore: %v", err)
			}
			if got, err := os.ReadFile(filepath.Join(mnt2, "a")); err != nil || string(got) != "changed" {
				t.Fatalf("the volume changed after a failed restore: %q %v", got, err)
			}
			e.unmount(mnt2)

			// A manifest that was changed is refused.
			mpath := filepath.Join(snap, volume.ManifestFile)
			orig, err := os.ReadFile(mpath)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mpath, bytes.Replace(orig, []byte(`"name":"s1"`), []byte(`"name":"s2"`), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			if r := e.runWith(cfg, "snapshot", "restore", "v", "s1"); r.code == 0 || !strings.Contains(r.stderr, "authentication") {
				t.Fatalf("restore of a tampered snapshot: %v", r)
			}
			if err := os.WriteFile(mpath, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			// Another volume's snapshot is refused.
			other := e.newVolume("other", key)
			os1 := e.snapshot(other)
			if r := e.runWith(cfg, "snapshot", "restore", "v", os1.Path); r.code == 0 || !strings.Contains(r.stderr, "not of") {
				t.Fatalf("restore of another volume's snapshot: %v", r)
			}

			r = e.mustWith(cfg, "snapshot", "restore", "v", "s1")
			e.mustWith(cfg, "mount", backing, mnt2)
			if got, err := os.ReadFile(filepath.Join(mnt2, "a")); err != nil || !bytes.Equal(got, first) {
				t.Fatalf("after restore a is not as in the snapshot: %v", err)
			}
			if _, err := os.Stat(filepath.Join(mnt2, "b")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after restore b, made after the snapshot, is still there: %v", err)
			}
			e.unmount(mnt2)
			if _, err := os.Stat(snap); err != nil {
				t.Fatalf("restore consumed the snapshot: %v", err)
			}
		})
	}
}

// TestSnapshotKeyRefused: a snapshot of a volume whose key is disabled or
// pending deletion is refused with exit 3, naming the key and its state.
func TestSnapshotKeyRefused(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			key := e.createKey("alias/snapk")
			backing := e.newVolume("vol", key)
			h, err := keywrap.ReadHeader(backing)
			if err != nil {
				t.Fatal(err)
			}
			e.must("kms", "disable-key", key)
			r := e.runWith(e.cfg, "snapshot", "create", backing)
			if r.code != exitKeyState || !strings.Contains(r.stderr, h.KeyID) || !strings.Contains(r.stderr, "Disabled") {
				t.Fatalf("snapshot under a disabled key: want exit %d naming %s and Disabled: %v", exitKeyState, h.KeyID, r)
			}
			oneLine(t, "snapshot under a disabled key", r.stderr)
			e.must("kms", "enable-key", key)
			e.must("kms", "schedule-key-deletion", key, "--days", "7", "--force")
			r = e.runWith(e.cfg, "snapshot", "create", backing)
			if r.code != exitKeyState || !strings.Contains(r.stderr, h.KeyID) || !strings.Contains(r.stderr, "PendingDeletion") {
				t.Fatalf("snapshot under a key pending deletion: want exit %d naming %s and PendingDeletion: %v", exitKeyState, h.KeyID, r)
			}
			e.must("kms", "cancel-key-deletion", key)
			if ents, _ := os.ReadDir(backing + ".snapshots"); len(ents) != 0 {
				t.Fatalf("refused snapshots left %d entries", len(ents))
			}
		})
	}
}

// TestSnapshotNewVolume: a volume made from a snapshot under the same key
// (no --key, or --key naming it) has a volume ID of its own, mounts beside
// the source with the snapshot's data and the source's key, and changes
// independently; another key is refused for now with a pointer to encvol
// copy, leaving nothing behind.
func TestSnapshotNewVolume(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			key := e.createKey("alias/snapn")
			other := e.createKey("alias/snapn-other")
			backing := e.newVolume("vol", key)
			mnt := e.mount(e.cfg, backing)
			data := gxRandom(t, 200_000)
			if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			s := e.snapshot(backing)
			src, err := keywrap.ReadHeader(backing)
			if err != nil {
				t.Fatal(err)
			}
			for i, args := range [][]string{{}, {"--key", key}} {
				nb := filepath.Join(e.dir, fmt.Sprintf("new%d", i))
				e.must(append([]string{"create", "--backing", nb, "--from-snapshot", s.Path}, args...)...)
				h, err := keywrap.ReadHeader(nb)
				if err != nil {
					t.Fatal(err)
				}
				if h.VolumeID == src.VolumeID || h.KeyID != src.KeyID || h.EncryptionContext[keywrap.ContextVolumeID] != h.VolumeID {
					t.Fatalf("from snapshot %v: volume %s key %s, source volume %s key %s", args, h.VolumeID, h.KeyID, src.VolumeID, src.KeyID)
				}
				nm := e.mount(e.cfg, nb)
				if got, err := os.ReadFile(filepath.Join(nm, "f")); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("volume from snapshot %v does not hold the data: %v", args, err)
				}
				if err := os.WriteFile(filepath.Join(nm, "f"), []byte("mine"), 0o600); err != nil {
					t.Fatal(err)
				}
				if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("writing the new volume changed the source: %v", err)
				}
			}
			nb := filepath.Join(e.dir, "underother")
			// Under another key the data is encrypted anew (copy engine).
			e.must("create", "--backing", nb, "--from-snapshot", s.Path, "--key", other)
			om := e.mount(e.cfg, nb, "ro")
			if got, err := os.ReadFile(filepath.Join(om, "f")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("volume from the snapshot under another key does not hold the data: %v", err)
			}
			gxUnmount(t, om)
		})
	}
}

// TestSnapshotPauseLease: a pause taken through the control socket holds
// write(2)s of the mount, and ends by itself when its lease runs out or
// its connection closes, so a snapshot command that dies or hangs never
// leaves the volume paused.
func TestSnapshotPauseLease(t *testing.T) {
	e := newGXEnv(t, "local", "")
	backing := e.newVolume("vol", e.createKey("alias/snapl"))
	mnt := e.mount(e.cfg, backing)
	mp, err := volume.CanonicalMountpoint(mnt)
	if err != nil {
		t.Fatal(err)
	}
	logPath := volume.LogPath(mp)
	for _, c := range []struct {
		lease time.Duration
		close bool
		log   string
	}{
		{500 * time.Millisecond, false, "its lease expired"},
		{time.Minute, true, "closed its connection"},
	} {
		conn, err := net.Dial("unix", volume.SocketPath(mp))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, `{"op":"pause","lease_ms":%d}`+"\n", c.lease.Milliseconds())
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.Contains(line, `"ok":true`) {
			t.Fatalf("pause: %q %v", line, err)
		}
		wrote := make(chan error, 1)
		go func() { wrote <- os.WriteFile(filepath.Join(mnt, "during"), []byte("x"), 0o600) }()
		if c.close {
			conn.Close()
		}
		gxWait(t, "the daemon ends the pause ("+c.log+")", 30*time.Second, func() bool {
			b, _ := os.ReadFile(logPath)
			return bytes.Contains(b, []byte(c.log))
		})
		select {
		case err := <-wrote:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("a write(2) still waits after the pause ended (%s)", c.log)
		}
	}
}
