package fusefs

import (
	"bytes"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/keywrap/names"
)

// FuzzDecodeMeta: the metadata xattr comes from the backing directory, which
// anyone with access to it can change. Whatever its bytes, decoding either
// fails or gives back exactly what encoding that result writes, so no mode
// bit beyond 07777 and no trailing byte is ever taken silently.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(meta{mode: 0o4755, uid: 1000, gid: 1000}.encode())
	f.Add(meta{}.encode())
	f.Add([]byte{metaVersion})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{metaVersion, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if got := m.encode(); !bytes.Equal(got, b) {
			t.Fatalf("decoded %x as %+v, which encodes as %x", b, m, got)
		}
	})
}

// FuzzDecodeMetaAuth: a version 2 record either fails or is exactly what
// encoding its result for the same ID writes; a record that passes for one
// ID never passes for another.
func FuzzDecodeMetaAuth(f *testing.F) {
	nc := fuzzMetaCodec(f)
	id := bytes.Repeat([]byte{0xa5}, 16)
	good, err := encodeMetaAuth(nc, id, meta{mode: 0o4755, uid: 1000, gid: 100})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:metaLen])
	f.Add(meta{}.encode())
	f.Fuzz(func(t *testing.T, b []byte) { checkAuthRoundTrip(t, nc, id, b) })
}

// checkAuthRoundTrip fails t when the record b decodes for id but does not
// encode back to itself, or also decodes for another ID; it returns what
// b decoded to (ok false: it did not).
func checkAuthRoundTrip(t *testing.T, nc *names.Codec, id, b []byte) (m meta, ok bool) {
	t.Helper()
	m, err := decodeMetaAuth(nc, id, b)
	if err != nil {
		return m, false
	}
	got, err := encodeMetaAuth(nc, id, m)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("decoded %x as %+v, which encodes as %x (%v)", b, m, got, err)
	}
	other := bytes.Clone(id)
	other[0] ^= 1
	if _, err := decodeMetaAuth(nc, other, b); err == nil {
		t.Fatalf("%x passes for two IDs", b)
	}
	return m, true
}

func fuzzMetaCodec(f testing.TB) *names.Codec {
	k, err := keywrap.RandomKey(32)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(k.Close)
	nc, err := names.NewCodec(k, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(nc.Close)
	nc.SetAuthMeta()
	return nc
}
