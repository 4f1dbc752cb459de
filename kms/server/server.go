// Package server serves a kms.Store over the AWS KMS JSON protocol
// (awsJson1_1: POST /, X-Amz-Target: TrentService.<Op>) with Signature
// Version 4 authentication, so AWS SDKs, awscli and encvol's own aws
// backend can use it unchanged.
//
// Every request is authenticated against a fixed set of principals (access
// key ID + secret → principal name); the store then authorizes that
// principal by key ownership and grants. A signed state-changing request
// is accepted once, and requests are throttled per principal and per
// connection (see Options). Errors carry AWS's exception
// names and HTTP statuses. Request logs name the operation, principal, key,
// status and latency; they never contain key material, plaintext or
// ciphertext blobs. A Decrypt whose signed kms.KeyCheckHeader marks it as a
// mounted volume's periodic key check is audited as such (summarised) and,
// when it succeeds, logged at debug level only.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kms"
)

// DefaultMaxBody bounds a request body. The largest legitimate KMS request
// (ImportKeyMaterial with a 4096-bit wrapped key plus a token, or Encrypt
// of 4 KiB) is far below it.
const DefaultMaxBody = 1 << 20

const (
	targetPrefix = "TrentService."
	contentType  = "application/x-amz-json-1.1"
)

// Options tunes a Server. The zero value is usable.
type Options struct {
	// Region, when set, is the only region accepted in a request's
	// credential scope; empty accepts any region.
	Region string
	// MaxBody is the largest accepted request body in bytes (DefaultMaxBody if 0).
	MaxBody int64
	// MaxSkew is how far a request's X-Amz-Date may be from Now (DefaultMaxSkew if 0).
	MaxSkew time.Duration
	// Now is the clock used to check signature freshness, to expire
	// remembered signatures and to refill rate limits (time.Now if nil).
	Now func() time.Time
	// RateLimit is the requests per second each principal may send on
	// average, and in a burst (DefaultRateLimit if 0; no limit if negative).
	RateLimit float64
	// MaxConns caps open connections (DefaultMaxConns if 0; no limit if
	// negative), MaxConnsPerAddr those from one remote IP address
	// (DefaultMaxConnsPerAddr if 0; no limit if negative).
	MaxConns, MaxConnsPerAddr int
	// MaxReplayEntries is how many signatures of state-changing requests
	// are remembered per principal (DefaultMaxReplayEntries if 0).
	MaxReplayEntries int
}

// Server is an http.Handler for the AWS KMS JSON API backed by a kms.Store.
// It is safe for concurrent use.
type Server struct {
	store *kms.Store
	log   zerolog.Logger
	opt   Options
	// verify is replaced as a whole when the principals change
	// (SetPrincipals), so a request sees one set of principals throughout.
	verify atomic.Pointer[verifier]
	rates  *principalRates // nil: no rate limit
	replay *replayGuard
	ops    map[string]opFunc
}

// New returns a server for store that accepts requests signed by any of
// principals. The store stays owned by the caller.
func New(store *kms.Store, principals []Principal, log zerolog.Logger, opt Options) *Server {
	if opt.MaxBody <= 0 {
		opt.MaxBody = DefaultMaxBody
	}
	if opt.MaxSkew <= 0 {
		opt.MaxSkew = DefaultMaxSkew
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.RateLimit == 0 {
		opt.RateLimit = DefaultRateLimit
	}
	if opt.MaxConns == 0 {
		opt.MaxConns = DefaultMaxConns
	}
	if opt.MaxConnsPerAddr == 0 {
		opt.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if opt.MaxReplayEntries <= 0 {
		opt.MaxReplayEntries = DefaultMaxReplayEntries
	}
	s := &Server{
		store:  store,
		log:    log,
		opt:    opt,
		rates:  newPrincipalRates(opt.RateLimit, opt.Now),
		replay: newReplayGuard(opt.MaxSkew, opt.MaxReplayEntries),
	}
	s.verify.Store(&verifier{
		byKey: principalsByKey(principals), region: opt.Region, maxSkew: opt.MaxSkew, now: opt.Now,
		signer: v4.NewSigner(),
	})
	s.ops = s.operations()
	return s
}

func principalsByKey(principals []Principal) map[string]Principal {
	byKey := make(map[string]Principal, len(principals))
	for _, p := range principals {
		byKey[p.AccessKeyID] = p
	}
	return byKey
}

// SetPrincipals replaces the principals the server accepts and the groups
// grants may name: a principal that is no longer in p is refused from its
// next request on, a member that left a group loses the group's grants.
func (s *Server) SetPrincipals(p *Principals) {
	// Everything else the verifier holds carries over; fields it shares
	// between requests must be pointers (go vet's copylocks catches a
	// mutex held by value).
	v := *s.verify.Load()
	v.byKey = principalsByKey(p.Principal)
	s.store.SetIdentities(p.Names(), p.GroupMap())
	s.verify.Store(&v)
}

// apiError is an error answered to the client: an AWS exception name, a
// message and the HTTP status AWS uses for it.
type apiError struct {
	Code    string
	Message string
	Status  int
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func validationError(format string, args ...any) *apiError {
	return &apiError{Code: "ValidationException", Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// toAPIError maps any handler error to what the client sees. Store errors
// keep their AWS code; anything else is an internal error whose details go
// to the log only.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ke *kms.Error
	if errors.As(err, &ke) {
		if ke.HTTPStatus() >= 500 {
			// Internal messages may name files of the store; they go to
			// the server log, not to remote clients.
			return &apiError{Code: ke.Code, Status: ke.HTTPStatus(), Message: "internal error; see the server log"}
		}
		return &apiError{Code: ke.Code, Message: ke.Message, Status: ke.HTTPStatus()}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &apiError{Code: "DependencyTimeoutException", Status: http.StatusServiceUnavailable, Message: "the request was cancelled or timed out"}
	}
	return &apiError{Code: "KMSInternalException", Status: http.StatusInternalServerError, Message: "internal error; see the server log"}
}

// Handler returns the HTTP handler serving the KMS API at "/".
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// reqLog collects what one request's log line reports.
type reqLog struct {
	op, principal, keyID string
	accessKeyID          string        // set only when authentication fails, to trace probing
	keyCheck             *kms.KeyCheck // a Decrypt the client marked as a key check
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := newRequestID()
	w.Header().Set("x-amzn-RequestId", reqID)
	var rl reqLog
	status, code := s.handle(w, r, &rl)
	ev := s.log.Info()
	switch {
	case status >= 500:
		ev = s.log.Error()
	case rl.keyCheck != nil && status == http.StatusOK:
		// A mount checks its key every few seconds: a successful check
		// is routine, and its audit record is a summary too.
		ev = s.log.Debug()
	}
	ev = ev.Str("request_id", reqID).Str("op", rl.op).Str("principal", rl.principal).
		Int("status", status).Dur("latency", time.Since(start)).Str("remote", r.RemoteAddr)
	if rl.keyID != "" {
		ev = ev.Str("key_id", rl.keyID)
	}
	if code != "" {
		ev = ev.Str("code", code)
	}
	if rl.accessKeyID != "" {
		ev = ev.Str("access_key_id", rl.accessKeyID)
	}
	if rl.keyCheck != nil {
		ev = ev.Str("key_check", rl.keyCheck.HeaderValue())
	}
	ev.Msg("kms request")
}

// handle serves one request and returns the status and error code (empty on
// success) for the request log.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, rl *reqLog) (int, string) {
	fail := func(e *apiError) (int, string) {
		writeError(w, e)
		return e.Status, e.Code
	}
	// A refusal before the body is read closes the connection, so that
	// net/http does not read (drain) the body either.
	refuse := func(e *apiError) (int, string) {
		w.Header().Set("Connection", "close")
		return fail(e)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		w.Header().Set("Allow", http.MethodPost)
		return refuse(&apiError{Code: "UnknownOperationException", Status: http.StatusMethodNotAllowed,
			Message: "the KMS API is served by POST / with an X-Amz-Target header"})
	}
	if e := connRefusal(r.Context()); e != nil {
		return refuse(e)
	}

	// The operation is named in the log even when authentication fails.
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, targetPrefix)
	rl.op = op
	if !ok {
		rl.op = target
	}

	// Everything but the signature is checked before the body is read, so
	// an unknown key or a stale date costs the server no body. One set of
	// principals serves the whole request.
	verify := s.verify.Load()
	pending, aerr := verify.checkHeaders(r)
	if aerr != nil {
		if a, perr := parseAuthorization(r.Header.Get("Authorization")); perr == nil {
			rl.accessKeyID = a.accessKeyID
		}
		return refuse(aerr)
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		return refuse(aerr)
	}
	// The body may carry plaintext (Encrypt) or wrapped key material.
	defer clear(body)
	principal, aerr := verify.checkSignature(r.Context(), pending, body)
	if aerr != nil {
		rl.accessKeyID = pending.auth.accessKeyID
		return fail(aerr)
	}
	rl.principal = principal.Name
	if aerr := s.rates.allow(principal.Name); aerr != nil {
		return fail(aerr)
	}

	if !ok {
		return fail(&apiError{Code: "UnknownOperationException", Status: http.StatusBadRequest,
			Message: fmt.Sprintf("X-Amz-Target %q is not a KMS operation (want %s<Operation>)", target, targetPrefix)})
	}
	f, ok := s.ops[op]
	if !ok {
		return fail(&apiError{Code: "UnknownOperationException", Status: http.StatusBadRequest,
			Message: fmt.Sprintf("operation %s is not supported by this server", op)})
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/x-amz-json-1.") {
		return fail(&apiError{Code: "SerializationException", Status: http.StatusBadRequest,
			Message: fmt.Sprintf("Content-Type %q is not supported; send %s", ct, contentType)})
	}
	if !repeatableOps[op] {
		if aerr := s.replay.admit(principal.Name, op, pending.auth.signature, pending.signedAt, s.opt.Now()); aerr != nil {
			return fail(aerr)
		}
	}
	if op == "Decrypt" {
		if rl.keyCheck, aerr = keyCheckOf(r); aerr != nil {
			return fail(aerr)
		}
	}

	resp, err := f(r.Context(), principal.Name, body, rl)
	if err != nil {
		ae := toAPIError(err)
		if ae.Code == "KMSInternalException" || ae.Status >= 500 {
			s.log.Error().Err(err).Str("op", op).Str("principal", principal.Name).Str("key_id", rl.keyID).Msg("kms operation failed")
		}
		return fail(ae)
	}
	if err := writeResponse(w, resp); err != nil {
		s.log.Error().Err(err).Str("op", op).Msg("encode kms response")
		return fail(toAPIError(err))
	}
	return http.StatusOK, ""
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	tooLarge := &apiError{Code: "ValidationException", Status: http.StatusRequestEntityTooLarge,
		Message: fmt.Sprintf("request body exceeds %d bytes", s.opt.MaxBody)}
	if r.ContentLength > s.opt.MaxBody {
		return nil, tooLarge
	}
	rd := http.MaxBytesReader(w, r.Body, s.opt.MaxBody)
	readErr := func(err error) *apiError {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge
		}
		return &apiError{Code: "SerializationException", Status: http.StatusBadRequest, Message: "cannot read the request body: " + err.Error()}
	}
	if r.ContentLength >= 0 {
		// net/http ends the body at the declared length, so one exactly
		// sized buffer holds all of it (bytes.Buffer would grow it twice).
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, readErr(err)
		}
		return buf, nil
	}
	b := new(bytes.Buffer)
	if _, err := b.ReadFrom(rd); err != nil {
		return nil, readErr(err)
	}
	return b.Bytes(), nil
}

type errorBody struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Type: e.Code, Message: e.Message})
}

// secretResponse is a response with a Plaintext field. It is encoded by
// hand into a buffer the server zeroes afterwards, so the plaintext is not
// left behind in encoding/json's pooled buffers.
type secretResponse struct {
	plaintext []byte
	rest      any         // the other fields; must encode as a JSON object
	header    http.Header // extra response headers
}

func writeResponse(w http.ResponseWriter, resp any) error {
	w.Header().Set("Content-Type", contentType)
	sr, ok := resp.(*secretResponse)
	if !ok {
		out, err := json.Marshal(resp)
		if err != nil {
			return fmt.Errorf("encode response: %w", err)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		_, err = w.Write(out)
		return err
	}
	defer clear(sr.plaintext)
	for k, v := range sr.header {
		w.Header()[k] = v
	}
	rest, err := json.Marshal(sr.rest)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	if len(rest) < 2 || rest[0] != '{' {
		return fmt.Errorf("encode response: not an object")
	}
	const field = `{"Plaintext":"`
	n := len(field) + base64.StdEncoding.EncodedLen(len(sr.plaintext)) + 1
	out := make([]byte, 0, n+len(rest))
	defer func() { clear(out[:cap(out)]) }()
	out = append(out, field...)
	out = base64.StdEncoding.AppendEncode(out, sr.plaintext)
	out = append(out, '"')
	if len(rest) > 2 {
		out = append(out, ',')
	}
	out = append(out, rest[1:]...)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, err = w.Write(out)
	return err
}

// newRequestID returns a random UUID, the form AWS uses for request IDs.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ListenAndServe serves the API on addr (TLS when tlsCert and tlsKey are
// both set) until ctx is done, then shuts down gracefully: in-flight
// requests get up to 10 seconds to finish. ready, if not nil, is called
// with the bound address once the listener accepts connections (so addr
// may use port 0). It returns nil after a shutdown caused by ctx.
func (s *Server) ListenAndServe(ctx context.Context, addr, tlsCert, tlsKey string, ready func(net.Addr)) error {
	if (tlsCert == "") != (tlsKey == "") {
		return fmt.Errorf("TLS needs both a certificate and a key file (got only one)")
	}
	var tlsConfig *tls.Config
	if tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate %s and key %s: %w", tlsCert, tlsKey, err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("start the KMS server: %w", err)
	}
	// Inside TLS, so that http.Server still sees the *tls.Conn it needs.
	ln = newConnLimiter(ln, s.opt.MaxConns, s.opt.MaxConnsPerAddr)
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         tlsConfig,
		ErrorLog:          newStdLogger(s.log),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       connContext,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shut down the KMS server on %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// stdLogWriter routes net/http's own messages (TLS handshake errors and
// the like) into the structured log.
type stdLogWriter struct{ log zerolog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("op", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = stdLogWriter{}

func newStdLogger(l zerolog.Logger) *log.Logger { return log.New(stdLogWriter{log: l}, "", 0) }

// ServeGCPercent is the garbage collector target (as GOGC) that
// `encvol kms serve` runs with unless GOGC is set in its environment. The
// server keeps a live heap of a few MiB but allocates ~15 KiB per request,
// so at the default of 100 it collects every few hundred requests, and on a
// small machine each cycle takes one of the cores for milliseconds, which
// shows in the latency of every request in flight. 400 costs a few MiB of
// heap and saves three collections in four.
const ServeGCPercent = 400

// TuneGC applies ServeGCPercent to this process unless the GOGC environment
// variable is set, and returns a function that restores the previous
// setting.
func TuneGC() (restore func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	prev := debug.SetGCPercent(ServeGCPercent)
	return func() { debug.SetGCPercent(prev) }
}
