package volume

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// The snapshot's side of a pause session (control_pause.go): it asks the
// mount's daemon to pause, renews the lease while the second pass runs, and
// resumes. Should this process die, its connection closes and the daemon
// resumes on its own.

// pauseAnswerTimeout bounds the wait for the daemon to set a pause up
// (its own bound is shorter).
const pauseAnswerTimeout = 3 * time.Minute

type pauseSession struct {
	sock  string
	c     net.Conn
	br    *bufio.Reader
	lease time.Duration
	info  PauseInfo

	mu       sync.Mutex // one request at a time on c
	stop     chan struct{}
	done     chan struct{}
	renewErr error // GUARDED_BY(mu)
}

// pauseMount asks the daemon behind sock to pause the mount's writes and
// returns once they are paused.
func pauseMount(ctx context.Context, sock string, lease time.Duration) (*pauseSession, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", sock, err)
	}
	p := &pauseSession{sock: sock, c: c, br: bufio.NewReader(c), lease: lease, stop: make(chan struct{}), done: make(chan struct{})}
	resp, err := p.request(controlRequest{Op: OpPause, LeaseMS: lease.Milliseconds()}, pauseAnswerTimeout)
	if err != nil {
		c.Close()
		if resp != nil && strings.HasPrefix(resp.Error, "unknown op") {
			return nil, fmt.Errorf("the mount's daemon cannot pause for a snapshot (it was started by an older encvol); unmount and mount the volume again, or snapshot it unmounted")
		}
		return nil, fmt.Errorf("pause the mount's writes: %w", err)
	}
	if resp.Pause == nil {
		c.Close()
		return nil, fmt.Errorf("pause the mount's writes: control socket %s: answer without the pause", sock)
	}
	p.info = *resp.Pause
	go p.renew()
	return p, nil
}

// request sends one request and reads its answer.
func (p *pauseSession) request(req controlRequest, timeout time.Duration) (*controlResponse, error) {
	_ = p.c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := p.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", p.sock, err)
	}
	line, err := p.br.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("control socket %s: no answer: %w", p.sock, err)
	}
	var resp controlResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("control socket %s: bad answer: %w", p.sock, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// renew keeps the lease alive until resume or close.
func (p *pauseSession) renew() {
	defer close(p.done)
	t := time.NewTicker(p.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		_, err := p.request(controlRequest{Op: OpRenew}, p.lease)
		if err != nil && p.renewErr == nil {
			p.renewErr = err
		}
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// resume ends the pause. It fails when the pause did not hold all along
// (its lease expired, the volume was unmounted): what was copied meanwhile
// may not be consistent.
func (p *pauseSession) resume() (ResumeInfo, error) {
	close(p.stop)
	<-p.done
	defer p.c.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	resp, err := p.request(controlRequest{Op: OpResume}, 30*time.Second)
	if err != nil {
		if p.renewErr != nil {
			err = p.renewErr
		}
		return ResumeInfo{}, fmt.Errorf("resume the mount's writes: %w", err)
	}
	if resp.Resume == nil {
		return ResumeInfo{}, fmt.Errorf("resume the mount's writes: control socket %s: answer without the pause length", p.sock)
	}
	if !resp.Resume.Held {
		return *resp.Resume, errors.New("the mount's writes resumed before the snapshot's last pass was done (the pause lease expired or the volume was unmounted), so the copy may not be consistent; take the snapshot again")
	}
	return *resp.Resume, nil
}

// abort drops the session; the daemon resumes at once.
func (p *pauseSession) abort() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.c.Close()
	<-p.done
}

// FindMountOf returns the status of the daemon that serves the backing
// directory backing (the same directory, whatever path names it), or nil.
func FindMountOf(ctx context.Context, backing string) (*Status, error) {
	want, err := dirIdentity(backing)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", backing, err)
	}
	return findMount(ctx, func(st *Status) bool {
		id, err := dirIdentity(st.Backing)
		return err == nil && id == want
	})
}
