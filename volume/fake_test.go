package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

const fakeARN = "arn:aws:kms:local:000000000000:key/11111111-2222-3333-4444-555555555555"

// fakeKMS is an in-memory kmsclient.Client with one key whose behaviour a
// test switches with setErr.
type fakeKMS struct {
	mu      sync.Mutex
	dk      []byte
	blob    []byte
	encCtx  map[string]string
	err     error                // returned by Decrypt while set
	grants  []string             // the grants Decrypt reports it was admitted by
	decrypt int                  // Decrypt calls
	marks   []kmsclient.KeyCheck // the key check marks of Decrypt calls, in order
	closed  bool
}

var _ kmsclient.Client = (*fakeKMS)(nil)

func (f *fakeKMS) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeKMS) decryptCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.decrypt
}

func kmsErr(kind error, code string) error {
	return &kmsclient.Error{Kind: kind, Op: "Decrypt", KMS: "fake", KeyID: fakeARN, Code: code, Message: "test"}
}

func (f *fakeKMS) GenerateDataKey(ctx context.Context, keyRef string, encCtx map[string]string) (*keywrap.Key, []byte, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dk = make([]byte, 32)
	rand.Read(f.dk)
	f.blob = make([]byte, 48)
	rand.Read(f.blob)
	f.encCtx = maps.Clone(encCtx)
	k, err := keywrap.NewKey(bytes.Clone(f.dk))
	return k, bytes.Clone(f.blob), fakeARN, err
}

func (f *fakeKMS) Decrypt(ctx context.Context, keyRef string, blob []byte, encCtx map[string]string) (*keywrap.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decrypt++
	if chk, ok := kmsclient.KeyCheckOf(ctx); ok {
		f.marks = append(f.marks, chk)
	}
	if f.err != nil {
		return nil, f.err
	}
	if !bytes.Equal(blob, f.blob) || !maps.Equal(encCtx, f.encCtx) || (keyRef != "" && keyRef != fakeARN) {
		return nil, kmsErr(kmsclient.ErrInvalidCiphertext, "InvalidCiphertextException")
	}
	kmsclient.ReportDecryptAccess(ctx, f.grants)
	return keywrap.NewKey(bytes.Clone(f.dk))
}

func (f *fakeKMS) DescribeKey(ctx context.Context, keyRef string) (kmsclient.KeyInfo, error) {
	return kmsclient.KeyInfo{KeyID: "11111111-2222-3333-4444-555555555555", Arn: fakeARN, State: "Enabled", Enabled: true}, nil
}

func (f *fakeKMS) DefaultKey(ctx context.Context) (string, error) { return fakeARN, nil }

func (f *fakeKMS) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

// fakeClock is a settable clock for grace tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestVolume creates a volume with the fake KMS in a temp dir.
func newTestVolume(t *testing.T) (*fakeKMS, string, *keywrap.Header) {
	t.Helper()
	f := &fakeKMS{}
	dir := t.TempDir()
	h, err := Create(context.Background(), f, CreateOptions{Backing: dir, KMSName: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	return f, dir, h
}
