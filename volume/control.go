package volume

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/fusefs"
)

// Control socket protocol: one JSON request line, one JSON response line.
const (
	OpStatus  = "status"
	OpUnmount = "unmount"
	// OpPause holds the mount's writes for a snapshot (control_pause.go);
	// the connection then carries OpRenew and OpResume.
	OpPause  = "pause"
	OpRenew  = "renew"
	OpResume = "resume"
	// OpRekey tells a mount that its header was rewrapped (rekeyfollow.go).
	OpRekey = "rekey"
)

type controlRequest struct {
	Op string `json:"op"`
	// LeaseMS (OpPause): the pause ends by itself when no request comes
	// on the connection for this long.
	LeaseMS int64        `json:"lease_ms,omitempty"`
	Rekey   *RekeyNotice `json:"rekey,omitempty"`
}

type controlResponse struct {
	OK     bool        `json:"ok"`
	Error  string      `json:"error,omitempty"`
	Status *Status     `json:"status,omitempty"`
	Pause  *PauseInfo  `json:"pause,omitempty"`
	Resume *ResumeInfo `json:"resume,omitempty"`
}

// Status is what a running mount reports through its control socket.
type Status struct {
	VolumeID         string          `json:"volume_id"`
	Name             string          `json:"name,omitempty"`
	Backing          string          `json:"backing"`
	Mountpoint       string          `json:"mountpoint"`
	KMS              string          `json:"kms"`
	KeyID            string          `json:"key_id"`
	KeyState         string          `json:"key_state"`
	Gate             string          `json:"gate"` // "open" or "closed"
	GateCause        string          `json:"gate_cause,omitempty"`
	LastCheck        time.Time       `json:"last_check"`
	LastSuccess      time.Time       `json:"last_success"`
	LastResult       string          `json:"last_result"`
	LastLatencyMS    float64         `json:"last_check_latency_ms"`
	Checks           uint64          `json:"checks"`
	Transitions      uint64          `json:"transitions"`
	KeyCheckInterval string          `json:"key_check_interval"`
	OfflineGrace     string          `json:"offline_grace"`
	OnRevoke         string          `json:"on_revoke"`
	ReadOnly         bool            `json:"read_only"`
	IO               fusefs.Counters `json:"io"`
	PID              int             `json:"pid"`
	Started          time.Time       `json:"started"`
	Socket           string          `json:"socket"`
	LogFile          string          `json:"log_file,omitempty"`
	// Ops counts the FUSE requests served, by opcode.
	Ops map[string]uint64 `json:"ops,omitempty"`
	// Snapshot is the snapshot directory when the mount serves a snapshot.
	Snapshot string `json:"snapshot,omitempty"`
	// Orphaned marks a mount whose daemon is gone (killed, crashed): the
	// kernel still lists it, but it answers every call with ENOTCONN until
	// it is unmounted. Only Mountpoint, Backing and Gate ("gone") are set.
	Orphaned bool `json:"orphaned,omitempty"`
}

// SocketDir is where control sockets live: /run/encvol for root,
// $XDG_RUNTIME_DIR/encvol for others (or a per-user directory under the
// temporary directory when XDG_RUNTIME_DIR is unset, as under su).
func SocketDir() string {
	return socketDirFor(os.Geteuid())
}

func socketDirFor(uid int) string {
	if uid == 0 {
		return "/run/encvol"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "encvol")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("encvol-%d", uid))
}

// CanonicalMountpoint makes p absolute and resolves symlinks in its parent
// (never in p itself: resolving a live mount would ask the mount).
func CanonicalMountpoint(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return abs, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", p, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// SocketPath is the control socket of the mount at mountpoint (canonical).
func SocketPath(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(SocketDir(), hex.EncodeToString(sum[:])[:16]+".sock")
}

// LogPath is the log file of a daemonized mount at mountpoint.
func LogPath(mountpoint string) string {
	return strings.TrimSuffix(SocketPath(mountpoint), ".sock") + ".log"
}

// EnsureSocketDir creates the socket directory with mode 0700 and refuses
// one owned by somebody else or open to others.
func EnsureSocketDir() (string, error) {
	dir := SocketDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("control socket directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("control socket directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Geteuid() {
		return "", fmt.Errorf("control socket directory %s is not a directory owned by uid %d", dir, os.Geteuid())
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", fmt.Errorf("control socket directory: %w", err)
		}
	}
	return dir, nil
}

// controlOps are what the daemon does for the control socket's requests.
type controlOps struct {
	status  func() Status
	unmount func() error
	// pause and resume hold and release the mount's writes; nil on a
	// mount that cannot pause.
	pause  func(ctx context.Context) (PauseInfo, error)
	resume func(gen uint64) ResumeInfo
	// rekey makes the mount follow a rewrapped header (rekeyfollow.go).
	rekey func(*RekeyNotice) (*Status, error)
}

type controlServer struct {
	controlOps
	path     string
	ln       net.Listener
	log      zerolog.Logger
	finished chan struct{}
	// handlers counts requests in progress; close waits for them so an
	// unmount request gets its answer before the daemon exits.
	handlers sync.WaitGroup

	mu       sync.Mutex
	sessions map[net.Conn]struct{} // GUARDED_BY(mu): connections holding a pause
}

// listenControl creates the control socket; an existing socket that still
// answers means the mountpoint is already served.
func listenControl(path string, ops controlOps, log zerolog.Logger) (*controlServer, error) {
	if _, err := EnsureSocketDir(); err != nil {
		return nil, err
	}
	if st, err := QueryStatus(context.Background(), path); err == nil {
		return nil, fmt.Errorf("%s is already mounted by encvol (pid %d, volume %s)", st.Mountpoint, st.PID, st.VolumeID)
	}
	_ = os.Remove(path) // stale socket of a daemon that died
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	s := &controlServer{controlOps: ops, path: path, ln: ln, log: log, finished: make(chan struct{}), sessions: map[net.Conn]struct{}{}}
	go s.serve()
	return s, nil
}

func (s *controlServer) serve() {
	defer close(s.finished)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error().Err(err).Str("path", s.path).Msg("control socket accept failed")
			}
			return
		}
		s.handlers.Add(1)
		go func() {
			defer s.handlers.Done()
			s.handle(c)
		}()
	}
}

// maxRequestLine bounds one request line.
const maxRequestLine = 4096

func (s *controlServer) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(c, maxRequestLine)
	req, err := readRequest(br)
	if errors.Is(err, errRequestSyntax) {
		s.reply(c, controlResponse{Error: err.Error()})
		return
	}
	if err != nil {
		return
	}
	var resp controlResponse
	switch req.Op {
	case OpPause:
		s.pauseSession(c, br, req)
		return
	case OpStatus:
		st := s.status()
		resp.OK, resp.Status = true, &st
	case OpUnmount:
		s.log.Info().Str("op", "unmount").Msg("unmount requested through the control socket")
		if err := s.unmount(); err != nil {
			resp.Error = err.Error()
		} else {
			resp.OK = true
		}
	case OpRekey:
		if s.rekey == nil {
			resp.Error = "this mount cannot follow a rekey"
		} else if st, err := s.rekey(req.Rekey); err != nil {
			resp.Error = err.Error()
		} else {
			resp.OK, resp.Status = true, st
		}
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	s.reply(c, resp)
}

var errRequestSyntax = errors.New("bad request")

// readRequest reads one request line.
func readRequest(br *bufio.Reader) (controlRequest, error) {
	var req controlRequest
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return req, fmt.Errorf("%w: longer than %d bytes", errRequestSyntax, maxRequestLine)
	}
	if err != nil && len(line) == 0 {
		return req, err
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, fmt.Errorf("%w: %v", errRequestSyntax, err)
	}
	return req, nil
}

func (s *controlServer) reply(c net.Conn, resp controlResponse) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	b, _ := json.Marshal(resp)
	_, _ = c.Write(append(b, '\n'))
}

// close stops accepting requests, ends the pause sessions (their pauses
// end with them) and removes the socket.
func (s *controlServer) close() {
	s.ln.Close()
	<-s.finished
	s.mu.Lock()
	for c := range s.sessions {
		c.Close()
	}
	s.mu.Unlock()
	s.handlers.Wait()
	_ = os.Remove(s.path)
}

func call(ctx context.Context, path string, op string, timeout time.Duration) (*controlResponse, error) {
	return callRequest(ctx, path, controlRequest{Op: op}, timeout)
}

func callRequest(ctx context.Context, path string, req controlRequest, timeout time.Duration) (*controlResponse, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("control socket %s: no answer: %w", path, err)
	}
	var resp controlResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("control socket %s: bad answer: %w", path, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// QueryStatus asks the daemon behind socket path for its status.
func QueryStatus(ctx context.Context, path string) (*Status, error) {
	resp, err := call(ctx, path, OpStatus, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("control socket %s: answer without status", path)
	}
	return resp.Status, nil
}

// RequestUnmount asks the daemon behind socket path to unmount; it returns
// once the kernel mount is gone (the daemon then zeroizes and exits).
func RequestUnmount(ctx context.Context, path string) error {
	_, err := call(ctx, path, OpUnmount, 30*time.Second)
	return err
}

// ListSockets returns the control sockets in SocketDir, sorted.
func ListSockets() ([]string, error) {
	ents, err := os.ReadDir(SocketDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list control sockets: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sock") {
			out = append(out, filepath.Join(SocketDir(), e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// IsStale reports whether err from QueryStatus means nobody listens on the
// socket any more (the daemon died without cleaning up).
func IsStale(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
