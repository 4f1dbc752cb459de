package kms

import "context"

func checkPolicyName(name string) error {
	if name != "" && name != PolicyName {
		return newErr(CodeNotFound, "key policy %q does not exist: the only key policy is %q", name, PolicyName)
	}
	return nil
}

// GetKeyPolicy returns the key's policy document (see policy.go): the one
// that was put, or else the key's effective access. policyName must be
// "default" or empty.
func (s *Store) GetKeyPolicy(ctx context.Context, principal, keyRef, policyName string) (string, error) {
	if err := checkPolicyName(policyName); err != nil {
		return "", err
	}
	var doc string
	err := s.adminRead(ctx, principal, "GetKeyPolicy", keyRef, func(_ *state, k *keyRec) error {
		var err error
		doc, err = s.policyDocument(k)
		return err
	})
	return doc, err
}

// ListKeyPolicies returns the names of the key's policies: always
// "default", as in AWS.
func (s *Store) ListKeyPolicies(ctx context.Context, principal, keyRef string) ([]string, error) {
	err := s.adminRead(ctx, principal, "ListKeyPolicies", keyRef, func(*state, *keyRec) error { return nil })
	if err != nil {
		return nil, err
	}
	return []string{PolicyName}, nil
}

// PutKeyPolicy replaces the key's policy with doc after checking it against
// the supported subset; a document outside it is refused whole, naming the
// statement and the reason.
func (s *Store) PutKeyPolicy(ctx context.Context, principal, keyRef, policyName, doc string) error {
	if err := checkPolicyName(policyName); err != nil {
		return s.auditOp(principal, "PutKeyPolicy", "", err)
	}
	return s.adminWrite(ctx, principal, "PutKeyPolicy", keyRef, func(st *state, k *keyRec) error {
		if k.Manager == KeyManagerAWS {
			return s.serviceKeyRefusal(k, "have its key policy changed")
		}
		if k.State == StatePendingDeletion {
			return s.stateErr(k)
		}
		if doc == "" {
			return validationErr("Policy is required")
		}
		p, err := s.parsePolicy(st, k, doc)
		if err != nil {
			return err
		}
		k.Policy = p
		return nil
	})
}
