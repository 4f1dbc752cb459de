package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
)

const (
	// DefaultMaxConns caps the server's open connections. A mount holds
	// one or two; the KMS benchmark opens 16.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerAddr caps the open connections from one remote IP
	// address, so that one host cannot take all of DefaultMaxConns: 50
	// mounts on one host stay well below it.
	DefaultMaxConnsPerAddr = 256
)

// connLimiter counts the listener's open connections, in total and per
// remote IP address. A connection over a limit is still accepted, so that
// its first request can be answered with a ThrottlingException that says
// which limit it hit (a reset connection says nothing), and then closed.
// Past twice the total limit connections are closed unanswered, which
// bounds the descriptors an attacker can hold.
type connLimiter struct {
	net.Listener
	maxTotal, maxPerAddr int // not positive: no limit

	mu      sync.Mutex
	total   int
	perAddr map[string]int
}

func newConnLimiter(ln net.Listener, maxTotal, maxPerAddr int) net.Listener {
	if maxTotal <= 0 && maxPerAddr <= 0 {
		return ln
	}
	return &connLimiter{Listener: ln, maxTotal: maxTotal, maxPerAddr: maxPerAddr, perAddr: map[string]int{}}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		l.mu.Lock()
		if l.maxTotal > 0 && l.total >= 2*l.maxTotal {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		var refusal *apiError
		switch {
		case l.maxTotal > 0 && l.total >= l.maxTotal:
			refusal = errThrottling(fmt.Sprintf("Rate exceeded: the server already has %d open connections, its limit (kms serve --max-conns); retry later and reuse connections", l.total))
		case l.maxPerAddr > 0 && l.perAddr[ip] >= l.maxPerAddr:
			refusal = errThrottling(fmt.Sprintf("Rate exceeded: %s already has %d open connections to this server, its limit per address (kms serve --max-conns-per-addr); close idle ones or reuse them", ip, l.perAddr[ip]))
		}
		l.total++
		l.perAddr[ip]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, ip: ip, refusal: refusal}, nil
	}
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perAddr[ip]--; l.perAddr[ip] <= 0 {
		delete(l.perAddr, ip)
	}
}

// limitedConn is a connection counted by a connLimiter until it is closed.
type limitedConn struct {
	net.Conn
	l       *connLimiter
	ip      string
	refusal *apiError // set if the connection was over a limit
	once    sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}

type connRefusalKey struct{}

// connContext carries the refusal of a connection over a limit into its
// requests' contexts (http.Server.ConnContext).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok && lc.refusal != nil {
		return context.WithValue(ctx, connRefusalKey{}, lc.refusal)
	}
	return ctx
}

// connRefusal is the refusal connContext put into ctx, if any.
func connRefusal(ctx context.Context) *apiError {
	e, _ := ctx.Value(connRefusalKey{}).(*apiError)
	return e
}
