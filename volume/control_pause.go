package volume

import (
	"bufio"
	"context"
	"errors"
	"net"
	"time"
)

// A pause session is one control connection that holds the mount's writes
// for a snapshot (fusefs/pause.go): OpPause, then any number of OpRenew,
// then OpResume. The pause is a lease: it ends when the connection closes
// or stays silent for lease, so a snapshot command that is killed or stuck
// never leaves the volume paused.

// Lease bounds for OpPause.
const (
	DefaultPauseLease = 10 * time.Second
	minPauseLease     = 100 * time.Millisecond
	maxPauseLease     = 10 * time.Minute
)

// PauseInfo is the daemon's answer to OpPause: the pause holds.
type PauseInfo struct {
	Gen        uint64  `json:"gen"`
	PreFlushMS float64 `json:"preflush_ms"` // write-back before writes waited
	FlushMS    float64 `json:"flush_ms"`    // write-back while new write(2)s waited
	DrainMS    float64 `json:"drain_ms"`    // wait for requests in service
}

// ResumeInfo is the daemon's answer to OpResume.
type ResumeInfo struct {
	PausedMS float64 `json:"paused_ms"` // how long new write(2)s waited
	// Held is false when the pause had ended before the resume (lease
	// expired, unmount): the backing may have changed meanwhile.
	Held bool `json:"held"`
}

func (s *controlServer) pauseSession(c net.Conn, br *bufio.Reader, req controlRequest) {
	if s.pause == nil {
		s.reply(c, controlResponse{Error: "this mount cannot pause (read-only)"})
		return
	}
	lease := time.Duration(req.LeaseMS) * time.Millisecond
	if lease == 0 {
		lease = DefaultPauseLease
	}
	lease = min(max(lease, minPauseLease), maxPauseLease)
	s.mu.Lock()
	s.sessions[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, c)
		s.mu.Unlock()
	}()

	// A caller that goes away while the pause is set up (it writes back
	// what the kernel holds) is noticed at the first read below, which
	// then ends the pause at once.
	info, err := s.pause(context.Background())
	if err != nil {
		s.reply(c, controlResponse{Error: err.Error()})
		return
	}
	s.log.Info().Str("op", "pause").Uint64("pause", info.Gen).Dur("lease", lease).Msg("writes paused through the control socket")
	s.reply(c, controlResponse{OK: true, Pause: &info})
	for {
		_ = c.SetReadDeadline(time.Now().Add(lease))
		next, err := readRequest(br)
		if err != nil {
			res := s.resume(info.Gen)
			why := "the snapshot command closed its connection"
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				why = "its lease expired"
			}
			s.log.Warn().Str("op", "resume").Uint64("pause", info.Gen).Float64("paused_ms", res.PausedMS).
				Msgf("pause ended because %s", why)
			return
		}
		switch next.Op {
		case OpRenew:
			s.reply(c, controlResponse{OK: true})
		case OpResume:
			res := s.resume(info.Gen)
			s.reply(c, controlResponse{OK: true, Resume: &res})
			return
		default:
			s.reply(c, controlResponse{Error: "a pause session takes only " + OpRenew + " and " + OpResume})
		}
	}
}

// pauseWrites holds the mount's writes (OpPause).
func (m *Mount) pauseWrites(ctx context.Context) (PauseInfo, error) {
	rep, err := m.fs.Pause(ctx)
	if err != nil {
		return PauseInfo{}, err
	}
	return PauseInfo{Gen: rep.Gen, PreFlushMS: ms(rep.PreFlush), FlushMS: ms(rep.Flush), DrainMS: ms(rep.Drain)}, nil
}

// resumeWrites ends pause gen (OpResume, or the end of its session).
func (m *Mount) resumeWrites(gen uint64) ResumeInfo {
	d, held := m.fs.Resume(gen)
	return ResumeInfo{PausedMS: ms(d), Held: held}
}
