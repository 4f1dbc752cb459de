package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
	"github.com/encvol/encvol/sector"
	"github.com/encvol/encvol/volume"
)

// End-to-end tests of `encvol import` through the real binary, on the
// embedded KMS and on `encvol kms serve`.

func decodeReport(t *testing.T, r gxResult) volume.TransferReport {
	t.Helper()
	var rep volume.TransferReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, r.stdout)
	}
	return rep
}

// TestImportTree: a tree with everything a volume keeps is imported and
// reads back equal through the mount (content, modes, owners, times to
// the nanosecond, link structure, attributes, special files); the source
// is not changed at all, not even its access times; holes stay holes in
// the backing; no plaintext name or content reaches the backing; the
// finished volume is not imported into again.
func TestImportTree(t *testing.T) {
	for _, backend := range gxBackends {
		t.Run(backend, func(t *testing.T) {
			e := newGXEnv(t, backend, "")
			key := e.createKey("alias/import")
			plain := filepath.Join(e.dir, "plain")
			makeTree(t, plain)
			before := treeListing(t, plain)
			backing := filepath.Join(e.dir, "vol")

			rep := decodeReport(t, e.must("import", plain, "--backing", backing, "--key", key, "--json"))
			if rep.Entries != int64(len(before)-1) || rep.Written != rep.Entries || rep.Skipped != 0 || rep.Checked == 0 || rep.Resumed {
				t.Errorf("report %+v for %d entries", rep, len(before)-1)
			}
			sameListing(t, "the source after the import", before, treeListing(t, plain))
			scanForCanary(t, backing)
			if _, err := os.Stat(filepath.Join(backing, keywrap.IncompleteFile)); !os.IsNotExist(err) {
				t.Errorf("finished import left its marker: %v", err)
			}

			mnt := e.mount(e.cfg, backing, "ro", "noatime", "nodiratime")
			sameListing(t, "the imported volume", ownSymlinks(before), treeListing(t, mnt))
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(mnt, "sparse"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != 64<<20 || st.Blocks*512 > 1<<20 {
				t.Errorf("sparse file: size %d, %d bytes allocated in the backing (want < 1 MiB)", st.Size, st.Blocks*512)
			}
			gxUnmount(t, mnt)

			r := e.runWith(e.cfg, "import", plain, "--backing", backing, "--key", key)
			if r.code != exitUsage || !strings.Contains(r.stderr, "already holds a volume") {
				t.Errorf("import into the finished volume: %v", r)
			}
			oneLine(t, "import into a finished volume", r.stderr)
		})
	}
}

// bulkTree adds n random files of size bytes under dir/bulk.
func bulkTree(t *testing.T, dir string, n, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "bulk"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, "bulk", fmt.Sprintf("f%04d-%s", i, canary)), gxRandom(t, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// finishedNames counts the entries in the root of a backing tree that
// have their final names (neither temporary nor encvol's own files).
func finishedNames(dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "encvol.") {
			n++
		}
	}
	return n
}

// noTemporaries fails the test if a temporary file is left in a backing
// tree.
func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	walkNoAtime(t, dir, func(p string, _ *unix.Stat_t) {
		if strings.HasPrefix(filepath.Base(p), keywrap.TempPrefix) {
			t.Errorf("temporary file left: %s", p)
		}
	})
}

// startKilled runs args in the background and kills it (SIGKILL) as soon
// as cond holds; it fails the test if the command ends first.
func (e *gxEnv) startKilled(cond func() bool, args ...string) string {
	e.t.Helper()
	cmd := exec.Command(encvolBin, append([]string{"--config", e.cfg}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		select {
		case err := <-done:
			e.t.Fatalf("encvol %s ended (%v) before it could be killed:\n%s", strings.Join(args, " "), err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			e.t.Fatalf("encvol %s: condition not met within 2 minutes:\n%s", strings.Join(args, " "), out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	<-done
	return out.String()
}

// killMidway runs args, kills the process (SIGKILL) as soon as it has
// finished some entries in the target backing, and checks what that
// leaves: the marker, no plaintext anywhere (temporary files included),
// and a mount refused with a message holding want and --resume.
func (e *gxEnv) killMidway(backing, want string, args ...string) {
	e.t.Helper()
	out := e.startKilled(func() bool { return finishedNames(backing) >= 6 }, args...)
	if _, err := os.Stat(filepath.Join(backing, keywrap.IncompleteFile)); err != nil {
		e.t.Fatalf("killed %s left no marker (%v); output:\n%s", args[0], err, out)
	}
	scanForCanary(e.t, backing)
	mnt := filepath.Join(e.dir, "m")
	os.Mkdir(mnt, 0o755)
	cleanupMount(e.t, mnt)
	r := e.runWith(e.cfg, "mount", backing, mnt)
	if r.code != exitUsage || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "--resume") {
		e.t.Fatalf("mount of the unfinished volume: %v", r)
	}
	oneLine(e.t, "mount of an unfinished volume", r.stderr)
}

// TestImportKilledAndRerun: an import killed once it has finished some
// files leaves a volume the mount refuses (naming --resume) and no
// plaintext anywhere, temporary files included; running the same command
// again finishes it, skipping what was done, and the result equals the
// source.
func TestImportKilledAndRerun(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/import")
	work := filepath.Join(e.dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, work, "2g")
	plain := filepath.Join(work, "plain")
	makeTree(t, plain)
	bulkTree(t, plain, 48, 8<<20)
	before := treeListing(t, plain)
	backing := filepath.Join(work, "vol")
	args := []string{"import", plain, "--backing", backing, "--key", key}

	e.killMidway(backing, "unfinished import of "+plain, args...)

	rep := decodeReport(t, e.must(append(args, "--json")...))
	if !rep.Resumed || rep.Skipped == 0 || rep.Written == 0 || rep.Written+rep.Skipped < rep.Entries {
		t.Errorf("rerun report %+v", rep)
	}
	noTemporaries(t, backing)
	sameListing(t, "the source after the import", before, treeListing(t, plain))
	m := e.mount(e.cfg, backing, "ro", "noatime", "nodiratime")
	sameListing(t, "the volume finished by the rerun", ownSymlinks(before), treeListing(t, m))
}

// TestImportFullDisk: a target file system that fills up fails the import
// cleanly (exit 1, naming the full disk and --resume), keeps the marker,
// and --resume after the file system was enlarged finishes it.
func TestImportFullDisk(t *testing.T) {
	e := newGXEnv(t, "local", "")
	plain := filepath.Join(e.dir, "plain")
	makeTree(t, plain)
	bulkTree(t, plain, 12, 4<<20)
	before := treeListing(t, plain)
	small := filepath.Join(e.dir, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, small, "24m")
	backing := filepath.Join(small, "vol")

	r := e.runWith(e.cfg, "import", plain, "--backing", backing)
	if r.code != exitFailure || !strings.Contains(r.stderr, "is full") || !strings.Contains(r.stderr, "no space left on device") || !strings.Contains(r.stderr, "--resume") {
		t.Fatalf("import into a full file system: %v", r)
	}
	oneLine(t, "full disk", lastLine(r.stderr))
	if _, err := os.Stat(filepath.Join(backing, keywrap.IncompleteFile)); err != nil {
		t.Fatalf("failed import left no marker: %v", err)
	}
	scanForCanary(t, backing)
	if err := syscall.Mount("tmpfs", small, "tmpfs", syscall.MS_REMOUNT, "size=256m"); err != nil {
		t.Fatal(err)
	}
	rep := decodeReport(t, e.must("import", plain, "--backing", backing, "--resume", "--json"))
	if !rep.Resumed || rep.Skipped == 0 {
		t.Errorf("resumed report %+v", rep)
	}
	m := e.mount(e.cfg, backing, "ro", "noatime", "nodiratime")
	sameListing(t, "the volume finished after the disk grew", ownSymlinks(before), treeListing(t, m))
}

// lastLine is the last non-empty line of s (progress lines come first).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1] + "\n"
}

// TestImportRefusals: every bad target or source is refused with one line
// naming the problem and the fix, and changes nothing.
func TestImportRefusals(t *testing.T) {
	e := newGXEnv(t, "local", "")
	plain := filepath.Join(e.dir, "plain")
	if err := os.MkdirAll(filepath.Join(plain, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(e.dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	nonEmpty := filepath.Join(e.dir, "nonempty")
	os.Mkdir(nonEmpty, 0o755)
	os.WriteFile(filepath.Join(nonEmpty, "keep"), []byte("x"), 0o600)

	// An unfinished import of another directory.
	other := filepath.Join(e.dir, "other")
	os.Mkdir(other, 0o700)
	m := &volume.Marker{Operation: volume.OpImport, Source: filepath.Join(e.dir, "elsewhere"), SourceID: "dev 1:2 inode 3",
		KMS: "local", SectorSize: 4096, NameMode: volume.NameModeEncrypted, Started: time.Now().UTC().Truncate(time.Second)}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(other, keywrap.IncompleteFile), b, 0o600)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"import", filepath.Join(e.dir, "missing"), "--backing", filepath.Join(e.dir, "v1")}, "does not exist"},
		{[]string{"import", file, "--backing", filepath.Join(e.dir, "v2")}, "not a directory"},
		{[]string{"import", plain, "--backing", nonEmpty}, "is not empty"},
		{[]string{"import", plain, "--backing", filepath.Join(plain, "sub", "vol")}, "inside"},
		{[]string{"import", plain, "--backing", other}, "unfinished import of " + filepath.Join(e.dir, "elsewhere")},
		{[]string{"import", plain}, "--backing DIR"},
		{[]string{"import"}, "plaintext directory to import"},
		{[]string{"import", plain, "--all"}, "--all takes no"},
		{[]string{"import", "--all"}, "import_from"},
	} {
		r := e.runWith(e.cfg, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("encvol %s: want exit %d naming %q: %v", strings.Join(tc.args, " "), exitUsage, tc.want, r)
			continue
		}
		oneLine(t, strings.Join(tc.args, " "), r.stderr)
	}
	for _, dir := range []string{filepath.Join(e.dir, "v1"), filepath.Join(e.dir, "v2"), filepath.Join(plain, "sub", "vol")} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("refused import left %s behind", dir)
		}
	}
	if _, err := os.Stat(filepath.Join(nonEmpty, keywrap.IncompleteFile)); !os.IsNotExist(err) {
		t.Error("refused import wrote into a non-empty directory")
	}

	// [policy] require_customer_key refuses the service key before any
	// data key is made, and leaves no target behind.
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(e.dir, "policy.toml")
	if err := os.WriteFile(policy, append(cfg, "\n[policy]\nrequire_customer_key = true\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(e.dir, "v3")
	r := e.runWith(policy, "import", plain, "--backing", target)
	if r.code != exitRefused || !strings.Contains(r.stderr, "require_customer_key") || !strings.Contains(r.stderr, "--key") {
		t.Errorf("import under the service key with require_customer_key: %v", r)
	}
	oneLine(t, "import refused by the policy", r.stderr)
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("import refused by the policy left %s behind", target)
	}
}

// TestImportAll: `import --all` converts every configured volume with
// import_from, prints a table with one row each, and fails (exit 1) when
// one of them failed while the others are done.
func TestImportAll(t *testing.T) {
	e := newGXEnv(t, "local", "")
	key := e.createKey("alias/bulk")
	plain := filepath.Join(e.dir, "plain")
	makeTree(t, plain)
	before := treeListing(t, plain)
	good, bad := filepath.Join(e.dir, "good"), filepath.Join(e.dir, "bad")
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, fmt.Sprintf("\n[volumes.good]\nbacking = %q\nkey = %q\nimport_from = %q\n\n[volumes.bad]\nbacking = %q\nimport_from = %q\n",
		good, key, plain, bad, filepath.Join(e.dir, "missing"))...)
	if err := os.WriteFile(e.cfg, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.runWith(e.cfg, "import", "--all")
	if r.code != exitFailure {
		t.Fatalf("import --all with one bad volume: %v", r)
	}
	var goodRow, badRow string
	for _, l := range strings.Split(r.stdout, "\n") {
		switch {
		case strings.HasPrefix(l, "good "):
			goodRow = l
		case strings.HasPrefix(l, "bad "):
			badRow = l
		}
	}
	if !strings.HasPrefix(r.stdout, "VOLUME") || !strings.HasSuffix(strings.TrimSpace(goodRow), "ok") ||
		!strings.Contains(goodRow, fmt.Sprint(len(before)-1)) || !strings.Contains(badRow, "failed") {
		t.Errorf("summary table:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 of 2 imports failed") {
		t.Errorf("stderr: %s", r.stderr)
	}
	m := e.mount(e.cfg, good, "ro", "noatime", "nodiratime")
	sameListing(t, "the volume imported by --all", ownSymlinks(before), treeListing(t, m))
}

// backingShape describes every entry of a backing directory by what does
// not depend on keys or randomness: depth, kind of name (its length for an
// encrypted one), type, backing mode and owner, link count, size (not of
// directories), modification time and the names of its attributes, with
// the value of the stored mode and owner.
func backingShape(t *testing.T, backing string) []string {
	t.Helper()
	var lines []string
	walkNoAtime(t, backing, func(p string, st *unix.Stat_t) {
		rel := strings.TrimPrefix(p, backing)
		name := filepath.Base(p)
		kind := fmt.Sprintf("name(%d)", len(name))
		switch {
		case p == backing:
			kind = "root"
		case name == keywrap.HeaderFile:
			return
		case strings.HasPrefix(name, "encvol.longname.") && strings.HasSuffix(name, ".name"):
			kind = "long-name side file"
		case strings.HasPrefix(name, "encvol.longname."):
			kind = "long name"
		case strings.HasPrefix(name, "encvol."):
			kind = name
		}
		typ := st.Mode & unix.S_IFMT
		l := fmt.Sprintf("depth=%d %s type=%o mode=%o owner=%d:%d nlink=%d", strings.Count(rel, "/"), kind, typ, st.Mode&0o7777, st.Uid, st.Gid, st.Nlink)
		if typ != unix.S_IFDIR {
			l += fmt.Sprintf(" size=%d", st.Size)
		}
		if kind != "encvol.dirid" && kind != "long-name side file" && kind != names.LongLinkDir && !strings.Contains(rel, names.LongLinkDir+"/") {
			// encvol's own files have the times of their writing
			l += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
		}
		buf := make([]byte, 1<<16)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		var attrs []string
		for x := range strings.SplitSeq(string(buf[:n]), "\x00") {
			if x == "" || x == sector.HolesXattr {
				// The hole map follows where the file has holes,
				// which the two writers leave in different places
				// (cp --sparse=always makes holes of zero runs that
				// import writes as data); the backing shows them anyway.
				continue
			}
			if x == "user.encvol.meta" {
				v := make([]byte, 64)
				m, err := unix.Lgetxattr(p, x, v)
				if err != nil {
					t.Fatal(err)
				}
				// The record without its tag: the tag binds it to
				// the entry's random file or directory ID.
				x += "=" + fmt.Sprintf("%x", v[:min(m, 13)])
			} else if strings.HasPrefix(x, "user.encvol.") {
				x = fmt.Sprintf("user.encvol.(%d bytes)", len(x)) // encrypted under the volume's key
			}
			attrs = append(attrs, x)
		}
		slices.Sort(attrs)
		lines = append(lines, l+" xattrs="+strings.Join(attrs, ","))
	})
	slices.Sort(lines)
	return lines
}

// TestImportWritesLikeTheMount: a volume written by import has the same
// backing layout as one the same tree was copied into with cp -a through
// the mount: the same entries with the same kinds and lengths of names,
// modes, owners, link counts, sizes, times and attributes (only the random
// bytes differ), so nothing tells the two apart.
func TestImportWritesLikeTheMount(t *testing.T) {
	e := newGXEnv(t, "local", "")
	plain := filepath.Join(e.dir, "plain")
	makeTree(t, plain)
	imported := filepath.Join(e.dir, "imported")
	e.must("import", plain, "--backing", imported)

	viaMount := filepath.Join(e.dir, "viamount")
	e.must("create", "--backing", viaMount)
	mnt := e.mount(e.cfg, viaMount)
	if out, err := exec.Command("cp", "-a", "--sparse=always", plain+"/.", mnt+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp -a into the mount: %v\n%s", err, out)
	}
	gxUnmount(t, mnt)
	waitUnlocked(t, viaMount)
	sameListing(t, "the backing written by import against the one written by cp -a through the mount",
		backingShape(t, viaMount), backingShape(t, imported))
}
