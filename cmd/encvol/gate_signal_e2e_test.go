package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// envGateReader turns the test binary into a reader process (see
// gateReaderMain) instead of running the tests.
const envGateReader = "ENCVOL_TEST_GATE_READER"

func init() {
	if spec := os.Getenv(envGateReader); spec != "" {
		// Package init runs on the process's main thread. A signal sent to
		// the process goes to that thread while it sleeps without one
		// pending, so its blocked system call is the one interrupted, as
		// in a single-threaded program (cat, a shell, Python).
		runtime.LockOSThread()
		os.Exit(gateReaderMain(spec))
	}
}

// gateReaderMain is a reader of one file on a mount: "before:PATH" opens
// it at once, "after:PATH" only when told to read, "mmap:PATH" maps it at
// once and reads it through the mapping; "probe:PATH" opens it at once and,
// told to read, asks for its size in a loop. It prints "ready", waits for a
// line on stdin, prints "reading", reads with raw system calls (which do
// not retry on EINTR, unlike os.File) and prints "done SIZE SHA256" or
// "error ERRNO". SIGINT and SIGTERM are caught and printed as "signal
// NAME", so they interrupt instead of killing.
func gateReaderMain(spec string) int {
	mode, path, _ := strings.Cut(spec, ":")
	// A stop-the-world collection would wait for the main thread, which
	// may sit in a page fault for as long as the gate is closed.
	debug.SetGCPercent(-1)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			fmt.Printf("signal %s\n", unix.SignalName(s.(syscall.Signal)))
		}
	}()
	fail := func(op string, err error) int {
		name := err.Error()
		if errno, ok := err.(syscall.Errno); ok {
			name = unix.ErrnoName(errno)
		}
		fmt.Printf("error %s %s\n", name, op)
		return 3
	}
	open := func() (int, error) { return syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0) }
	fd := -1
	var err error
	if mode != "after" {
		if fd, err = open(); err != nil {
			return fail("open", err)
		}
	}
	var mapped []byte
	if mode == "mmap" {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fail("fstat", err)
		}
		if mapped, err = syscall.Mmap(fd, 0, int(st.Size), syscall.PROT_READ, syscall.MAP_SHARED); err != nil {
			return fail("mmap", err)
		}
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fail("stdin", err)
	}
	fmt.Println("reading")
	if mode == "after" {
		if fd, err = open(); err != nil {
			return fail("open", err)
		}
	}
	if mode == "probe" {
		var st unix.Statx_t
		for {
			if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_SIZE, &st); err != nil {
				return fail("statx", err)
			}
		}
	}
	h := sha256.New()
	size := 0
	if mapped != nil {
		h.Write(mapped)
		size = len(mapped)
	} else {
		buf := make([]byte, 1<<20)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil {
				return fail("read", err)
			}
			if n == 0 {
				break
			}
			h.Write(buf[:n])
			size += n
		}
	}
	fmt.Printf("done %d %x\n", size, h.Sum(nil))
	return 0
}

// gateReader is a running gateReaderMain process.
type gateReader struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	exit  chan error
}

// startReader starts a reader of the volume's file (see gateReaderMain for
// mode) and waits until it is ready.
func (v *hangVolume) startReader(t *testing.T, name, mode string) *gateReader {
	t.Helper()
	path := v.path
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	// No asynchronous preemption: since Go 1.26 the runtime may send
	// SIGURG to a thread blocked in a system call, so that the only
	// signals a reader gets are the ones its test sends (as a program like
	// cat); TestGateHangQuietSignals sends SIGURG itself.
	godebug := "asyncpreemptoff=1"
	if old := os.Getenv("GODEBUG"); old != "" {
		godebug = old + "," + godebug
	}
	cmd.Env = append(os.Environ(), envGateReader+"="+mode+":"+path, "GODEBUG="+godebug)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &gateReader{t: t, name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16), exit: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.exit <- cmd.Wait()
	}()
	v.readers = append(v.readers, r)
	// SIGKILL ends a reader left blocked by a failed test, or, when it
	// waits uninterruptibly behind another request, once the key is back
	// (hangMount's cleanup enables it and reaps the readers).
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	r.expect("ready", 10*time.Second)
	return r
}

// expect waits for the next line that starts with prefix; the lines the
// reader's signal handler prints ("signal NAME") may come before it, in
// any order with the main thread's, and are skipped unless asked for.
func (r *gateReader) expect(prefix string, limit time.Duration) string {
	r.t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				r.t.Fatalf("reader %s exited before printing %q", r.name, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
			if !strings.HasPrefix(l, "signal ") {
				r.t.Fatalf("reader %s: want %q, got %q", r.name, prefix, l)
			}
		case <-deadline:
			r.t.Fatalf("reader %s: no %q within %v; its main thread waits in:\n%s", r.name, prefix, limit, r.kernelStack())
		}
	}
}

// read tells the reader to read, and returns once its main thread sleeps
// in the kernel: in the system call nr, or in a page fault for nr -1.
func (r *gateReader) read(nr int) {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, "go\n"); err != nil {
		r.t.Fatal(err)
	}
	r.expect("reading", 10*time.Second)
	start := time.Now()
	for r.blockedIn() != nr {
		if time.Since(start) > 10*time.Second {
			// What it does instead says which way the request went.
			r.t.Fatalf("reader %s does not wait in system call %d after 10 s: it is in %d (-2: not asleep in the kernel, or gone), printed %q; kernel stack:\n%s",
				r.name, nr, r.blockedIn(), r.printed(), r.kernelStack())
		}
		time.Sleep(gxPoll)
	}
}

// printed returns the lines the reader printed that nobody read yet.
func (r *gateReader) printed() []string {
	var out []string
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				return append(out, "(exited)")
			}
			out = append(out, l)
		default:
			return out
		}
	}
}

// kernelStack is where the reader's main thread sleeps in the kernel
// (/proc/PID/stack, readable by root), for failure messages.
func (r *gateReader) kernelStack() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stack", r.cmd.Process.Pid))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// blockedIn returns the number of the system call the reader's main thread
// sleeps in (-1: sleeping outside one, in a page fault), or -2 when it
// does not sleep in the kernel, from /proc/PID/syscall.
func (r *gateReader) blockedIn() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", r.cmd.Process.Pid))
	if err != nil {
		return -2
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -2
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil { // "running"
		return -2
	}
	return nr
}

// TestGateHangSignals: on an on_revoke=hang mount with the key disabled, a
// reader waiting at the closed gate ends with EINTR on SIGINT or SIGTERM,
// each on its own signal even when another reader of the same file waits
// too, while a reader that gets no signal waits on and reads the right
// data once the key is enabled again. "before": the readers opened the file
// before the gate closed and read after; "after": they open it after.
func TestGateHangSignals(t *testing.T) {
	for _, mode := range []string{"before", "after"} {
		t.Run(mode, func(t *testing.T) {
			v := hangMount(t)
			nr := unix.SYS_READ
			if mode == "after" {
				nr = unix.SYS_OPENAT
			}
			a := v.startReader(t, "A", mode)
			b := v.startReader(t, "B", mode)
			c := v.startReader(t, "C", mode)
			var probe *gateReader
			if mode == "before" {
				probe = v.startReader(t, "probe", "probe")
			}
			v.closeGate(t)
			if probe != nil {
				// With the writeback cache the kernel owns the size of a
				// regular file, so the gate's invalidation does not make
				// it stale: a read(2) of an open file asks the daemon for
				// attributes, and so waits at the gate in a request of its
				// own, only once the attribute timeout (1 s) has run out.
				// The probe asks for the size in a loop, answered from the
				// cache until then, and sleeps in statx(2) once the request
				// goes to the daemon.
				probe.read(unix.SYS_STATX)
			}
			for _, r := range []*gateReader{a, b, c} {
				r.read(nr)
			}

			// B first: it must not depend on A's request ending.
			for _, step := range []struct {
				r   *gateReader
				sig syscall.Signal
			}{{b, syscall.SIGTERM}, {a, syscall.SIGINT}} {
				start := time.Now()
				if err := step.r.cmd.Process.Signal(step.sig); err != nil {
					t.Fatal(err)
				}
				step.r.expect("error EINTR", 5*time.Second)
				t.Logf("%s: reader %s ended with EINTR %v after %s", mode, step.r.name, time.Since(start).Round(time.Millisecond), unix.SignalName(step.sig))
			}
			if got := c.blockedIn(); got != nr {
				t.Fatalf("reader C, never signalled, no longer waits in system call %d (now %d)", nr, got)
			}
			v.openGate()
			if got, want := c.expect("done", 10*time.Second), v.done(); got != want {
				t.Fatalf("reader C after enable-key: %q, want %q", got, want)
			}
		})
	}
}

// TestGateHangQuietSignals: a signal whose default action is to ignore it
// (here SIGURG, with which Go preempts a thread in a long system call, and
// SIGWINCH), caught by the reader, does not end its wait at the closed
// gate, although the kernel interrupts the request for it; a SIGINT that
// comes later still does.
func TestGateHangQuietSignals(t *testing.T) {
	v := hangMount(t)
	r := v.startReader(t, "Q", "before")
	v.closeGate(t)
	r.read(unix.SYS_READ)
	log := v.e.status(v.mnt).LogFile
	const kept = "interrupted a call waiting at the closed key gate; it waits on"
	before := countLines(log, kept)
	pid := r.cmd.Process.Pid
	for _, sig := range []syscall.Signal{unix.SIGURG, unix.SIGWINCH} {
		if err := unix.Tgkill(pid, pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel interrupts a request once: the first signal's interrupt
	// has been served when the daemon says the call waits on.
	for deadline := time.Now().Add(10 * time.Second); countLines(log, kept) == before; time.Sleep(gxPoll) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not say within 10 s that the interrupted call waits on; reader in system call %d, printed %q", r.blockedIn(), r.printed())
		}
	}
	if got := r.blockedIn(); got != unix.SYS_READ {
		t.Fatalf("reader no longer waits in read(2) after SIGURG and SIGWINCH (now in %d), printed %q", got, r.printed())
	}
	start := time.Now()
	if err := unix.Tgkill(pid, pid, unix.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.expect("error EINTR", 5*time.Second)
	t.Logf("SIGINT after the quiet signals ended the wait in %v", time.Since(start).Round(time.Millisecond))
}

// TestGateHangMmapSignal: a process whose access to an mmap'ed file waits
// at the closed gate (a page fault, not a system call) still runs its
// signal handler, and the access completes with the right data once the
// key is back. The signal is sent to the faulting thread only, as the
// kernel delivers it to a single-threaded process.
func TestGateHangMmapSignal(t *testing.T) {
	v := hangMount(t)
	r := v.startReader(t, "M", "mmap")
	v.closeGate(t)
	r.read(-1)
	pid := r.cmd.Process.Pid
	if err := unix.Tgkill(pid, pid, unix.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.expect("signal SIGINT", 5*time.Second)
	// The handler ran; the access faults again and waits on.
	gxWait(t, "reader M waiting in the page fault again", 5*time.Second, func() bool { return r.blockedIn() == -1 })
	v.openGate()
	if got, want := r.expect("done", 10*time.Second), v.done(); got != want {
		t.Fatalf("mmap reader after enable-key: %q, want %q", got, want)
	}
}

// hangVolume is a mounted volume with on_revoke=hang and one file on it.
type hangVolume struct {
	e        *gxEnv
	key, mnt string
	path     string
	data     []byte
	readers  []*gateReader
}

// hangMount mounts a new volume with on_revoke=hang and writes a file to
// it. The key is enabled again when the test ends, so nothing stays
// blocked.
func hangMount(t *testing.T) *hangVolume {
	t.Helper()
	e := newGXEnv(t, "local", "")
	v := &hangVolume{e: e, key: e.createKey("alias/signals")}
	v.mnt = e.mount(e.cfg, e.newVolume("vol", v.key), "on_revoke=hang")
	t.Cleanup(func() {
		e.runWith(e.cfg, "kms", "enable-key", v.key)
		for _, r := range v.readers {
			select {
			case <-r.exit:
			case <-time.After(20 * time.Second):
				t.Errorf("reader %s (pid %d) did not exit", r.name, r.cmd.Process.Pid)
			}
		}
	})
	v.data = gxRandom(t, 3<<20)
	v.path = filepath.Join(v.mnt, "f")
	if err := os.WriteFile(v.path, v.data, 0o644); err != nil {
		t.Fatal(err)
	}
	return v
}

// closeGate disables the key and waits until the gate has closed and
// dropped the kernel's caches (the daemon logs "key gate closed" after
// that), so that every later access has to ask the daemon.
func (v *hangVolume) closeGate(t *testing.T) {
	t.Helper()
	log := v.e.status(v.mnt).LogFile
	before := countLines(log, "key gate closed")
	v.e.must("kms", "disable-key", v.key)
	gxWait(t, "gate closed and caches dropped", 10*time.Second, func() bool { return countLines(log, "key gate closed") > before })
}

// openGate enables the key again.
func (v *hangVolume) openGate() { v.e.must("kms", "enable-key", v.key) }

// done is what a reader prints after reading the file whole.
func (v *hangVolume) done() string {
	return fmt.Sprintf("done %d %x", len(v.data), sha256.Sum256(v.data))
}

func countLines(path, substr string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), substr)
}
