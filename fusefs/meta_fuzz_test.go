package fusefs

import (
	"bytes"
	"testing"
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
