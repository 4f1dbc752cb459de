package kmsclient_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/kmsclient"
)

// TestKeyCheckMarking: Decrypts marked with WithKeyCheck reach the key
// store as key checks through both backends (the remote one through its
// signed header), so the audit log summarises them, and "which volumes
// use this key" still counts every check.
func TestKeyCheckMarking(t *testing.T) {
	for _, backend := range []string{"local", "aws-to-encvol-server"} {
		t.Run(backend, func(t *testing.T) {
			// The audit log is read as `encvol kms audit` reads it: through
			// a local KMS on the store (the server's, for the remote one).
			var a, reader kmsclient.Admin
			ctx := context.Background()
			if backend == "local" {
				a = openLocal(t)
				reader = a
			} else {
				ts := startServer(t, "")
				a = ts.admin(t, "alice")
				var err error
				if reader, err = kmsclient.NewAdmin(ctx, "local", kmsclient.Config{Type: "local", Path: ts.storeDir}); err != nil {
					t.Fatal(err)
				}
				defer reader.Close()
			}
			k := mustCreateKey(t, a, "")
			ec := volCtx("vol-checked")
			blob := roundTrip(t, a, k.KeyID, ec)
			mount := kmsclient.NewMountID()
			for i := range 10 {
				dk, err := a.Decrypt(kmsclient.WithKeyCheck(ctx, kmsclient.KeyCheck{Mount: mount, Last: i == 9}), k.KeyID, blob, ec)
				if err != nil {
					t.Fatalf("check %d: %v", i, err)
				}
				dk.Close()
			}
			recs, err := reader.Audit(ctx, kmsclient.AuditFilter{KeyRef: k.KeyID})
			if err != nil {
				t.Fatal(err)
			}
			var events []string
			for _, r := range recs {
				if r.KeyCheck != nil {
					if r.KeyCheck.Mount != mount {
						t.Fatalf("record of mount %q, want %q", r.KeyCheck.Mount, mount)
					}
					events = append(events, fmt.Sprintf("%s:%d", r.KeyCheck.Event, r.KeyCheck.Checks))
				}
			}
			if got := strings.Join(events, " "); got != "first:1 summary:8 last:1" {
				t.Fatalf("key check records %q, want first:1 summary:8 last:1", got)
			}
			uses := kmsclient.VolumesUsingKey(recs, time.Time{})
			if len(uses) != 1 || uses[0].VolumeID != "vol-checked" || uses[0].Uses != 2+10 {
				t.Fatalf("VolumesUsingKey = %+v, want vol-checked with 12 uses", uses)
			}
		})
	}
}
