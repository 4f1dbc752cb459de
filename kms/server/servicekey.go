package server

import (
	"context"
	"strings"

	"github.com/encvol/encvol/kms"
)

// ensureServiceKey creates the service key on first use, as the local KMS
// does: a client that names alias/encvol/default (a volume created without
// a key) finds it, owned by the KMS itself, so that nobody may disable,
// delete or share it. Other references are left alone.
func (s *Server) ensureServiceKey(ctx context.Context, principal, keyRef string) error {
	if keyRef != kms.ServiceKeyAlias && !strings.HasSuffix(keyRef, ":"+kms.ServiceKeyAlias) {
		return nil
	}
	_, err := s.store.ServiceKey(ctx, principal)
	return err
}
