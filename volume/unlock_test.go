package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kmsclient"
)

// describeKMS is the fake KMS with DescribeKey failing as a test says.
type describeKMS struct {
	*fakeKMS
	describeErr error
}

func (d describeKMS) DescribeKey(ctx context.Context, keyRef string) (kmsclient.KeyInfo, error) {
	if d.describeErr != nil {
		return kmsclient.KeyInfo{}, d.describeErr
	}
	return d.fakeKMS.DescribeKey(ctx, keyRef)
}

// A failed unwrap is a damaged header when the header's key is usable,
// and a key problem when the key itself is gone or refuses.
func TestUnlockTellsDamagedHeaderFromKey(t *testing.T) {
	notFound := kmsErr(kmsclient.ErrNotFound, "NotFoundException")
	cases := []struct {
		name        string
		decryptErr  error
		describeErr error
		damaged     bool
		state       string // KeyError state when not damaged
	}{
		{"blob does not authenticate", kmsErr(kmsclient.ErrInvalidCiphertext, "InvalidCiphertextException"), nil, true, ""},
		{"blob names a key that does not exist, header's key does", notFound, nil, true, ""},
		{"header's key is deleted", notFound, notFound, false, "NotFound"},
		{"key disabled", kmsErr(kmsclient.ErrDisabled, "DisabledException"), nil, false, "Disabled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, dir, h := newTestVolume(t)
			f.setErr(c.decryptErr)
			_, err := UnlockHeader(context.Background(), describeKMS{f, c.describeErr}, "fake", dir, h)
			var de *DamagedKeyError
			var ke *KeyError
			switch {
			case c.damaged:
				if !errors.As(err, &de) || !errors.Is(err, keywrap.ErrHeaderCorrupt) {
					t.Fatalf("want a damaged header, got %v", err)
				}
				if msg := err.Error(); !strings.Contains(msg, "is damaged") || !strings.Contains(msg, "restore the header from a backup") {
					t.Errorf("message: %s", msg)
				}
			case !errors.As(err, &ke) || ke.State != c.state || errors.Is(err, keywrap.ErrHeaderCorrupt):
				t.Fatalf("want a key error in state %s, got %v", c.state, err)
			}
		})
	}
}
