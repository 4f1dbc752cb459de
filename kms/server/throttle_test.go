package server

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
)

func TestRateLimitPerPrincipal(t *testing.T) {
	// The clock only moves when the test moves it, so "per second" is exact.
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	env := startServer(t, Options{RateLimit: 2, Now: clock})
	ctx := context.Background()
	c := newClient(env.url, admin)
	for i := range 2 {
		if _, err := c.ListKeys(ctx, &awskms.ListKeysInput{}); err != nil {
			t.Fatalf("request %d within the limit: %v", i+1, err)
		}
	}
	_, err := c.ListKeys(ctx, &awskms.ListKeysInput{})
	if apiCode(err) != "ThrottlingException" || !strings.Contains(err.Error(), "--rate-limit") {
		t.Fatalf("third request in one second at 2 per second: %v; want ThrottlingException naming --rate-limit", err)
	}
	// Each principal has its own budget.
	if _, err := newClient(env.url, reader).ListKeys(ctx, &awskms.ListKeysInput{}); err != nil {
		t.Fatalf("another principal: %v", err)
	}
	// Requests that fail authentication take nothing from the budget.
	now.Add(int64(time.Second))
	impostor := admin
	impostor.SecretAccessKey = "notAdminsSecretNotAdminsSecret01"
	for range 5 {
		if _, err := newClient(env.url, impostor).ListKeys(ctx, &awskms.ListKeysInput{}); apiCode(err) != "InvalidSignatureException" {
			t.Fatalf("request with a wrong secret: %v", err)
		}
	}
	if _, err := c.ListKeys(ctx, &awskms.ListKeysInput{}); err != nil {
		t.Fatalf("a second later: %v", err)
	}
}

// The defaults must not throttle what volumes and the KMS benchmark send:
// 2,000 Decrypt/s from one principal for a minute, and 50 mounts' key
// checks starting at the same instant.
func TestDefaultRateLimitAdmitsBenchmarkLoad(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := t0
	r := newPrincipalRates(DefaultRateLimit, func() time.Time { return now })
	for i := range 2000 * 60 {
		now = t0.Add(time.Duration(i) * time.Second / 2000)
		if e := r.allow("bench"); e != nil {
			t.Fatalf("request %d at 2,000/s: %v", i, e)
		}
	}
	for i := range 50 * 4 { // each mount: DescribeKey, Decrypt, and a check or two
		if e := r.allow("mounts"); e != nil {
			t.Fatalf("mount request %d: %v", i, e)
		}
	}
}

// dialIdle opens a connection to the server at url and leaves it idle.
func dialIdle(t *testing.T, url string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// callOnNewConn sends a signed ListKeys on a connection of its own.
func callOnNewConn(t *testing.T, url string) (int, string, string) {
	t.Helper()
	return rawCall{client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}.do(t, url)
}

func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name, flag string
		opt        Options
	}{
		{"per address", "--max-conns-per-addr", Options{MaxConnsPerAddr: 2}},
		{"per server", "--max-conns", Options{MaxConns: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := startServer(t, tc.opt)
			first := dialIdle(t, env.url)
			dialIdle(t, env.url)
			status, code, msg := callOnNewConn(t, env.url)
			if status != http.StatusBadRequest || code != "ThrottlingException" || !strings.Contains(msg, tc.flag) {
				t.Fatalf("third connection with a limit of 2: status %d %s (%s); want 400 ThrottlingException naming %s", status, code, msg, tc.flag)
			}
			// A closed connection makes room once the server has seen it go.
			_ = first.Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				status, code, msg = callOnNewConn(t, env.url)
				if status == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after closing a connection: status %d %s (%s)", status, code, msg)
				}
				time.Sleep(5 * time.Millisecond) // poll interval
			}
		})
	}
}

// A connection over the limit is answered and closed even if it never
// sends a body, and the answer comes before the server reads any.
func TestConnectionLimitAnswersFirstRequest(t *testing.T) {
	env := startServer(t, Options{MaxConnsPerAddr: 1})
	dialIdle(t, env.url)
	c := dialIdle(t, env.url)
	if _, err := c.Write([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer on a connection over the limit: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("status %d, close %v; want 400 and the connection closed", resp.StatusCode, resp.Close)
	}
}
