package server

import (
	"context"

	"github.com/encvol/encvol/kms"
)

// The key management operations Terraform's AWS provider and scripts call
// besides the key life cycle: key policies, tags, descriptions, retirable
// grants, rotation history and deleting imported material.

func fromTagJSON(in []tagJSON) []kms.Tag {
	tags := make([]kms.Tag, 0, len(in))
	for _, t := range in {
		tags = append(tags, kms.Tag{Key: t.TagKey, Value: t.TagValue})
	}
	return tags
}

// needKey is the refusal of a request without its KeyId.
func needKey(in string, rl *reqLog) error {
	if in == "" {
		return required("keyId")
	}
	rl.keyID = in
	return nil
}

// ---- key policies ----

type keyPolicyInput struct {
	KeyId                          string `json:"KeyId"`
	PolicyName                     string `json:"PolicyName"`
	Policy                         string `json:"Policy"`
	BypassPolicyLockoutSafetyCheck bool   `json:"BypassPolicyLockoutSafetyCheck"`
}

type getKeyPolicyOutput struct {
	Policy     string `json:"Policy"`
	PolicyName string `json:"PolicyName"`
}

func (s *Server) getKeyPolicy(ctx context.Context, p string, in *keyPolicyInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	doc, err := s.store.GetKeyPolicy(ctx, p, in.KeyId, in.PolicyName)
	if err != nil {
		return nil, err
	}
	return getKeyPolicyOutput{Policy: doc, PolicyName: kms.PolicyName}, nil
}

func (s *Server) putKeyPolicy(ctx context.Context, p string, in *keyPolicyInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	if in.Policy == "" {
		return nil, required("policy")
	}
	// BypassPolicyLockoutSafetyCheck: see createKey.
	return empty{}, s.store.PutKeyPolicy(ctx, p, in.KeyId, in.PolicyName, in.Policy)
}

type listKeyPoliciesOutput struct {
	PolicyNames []string `json:"PolicyNames"`
	NextMarker  string   `json:"NextMarker,omitempty"`
	Truncated   bool     `json:"Truncated"`
}

func (s *Server) listKeyPolicies(ctx context.Context, p string, in *listInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	names, err := s.store.ListKeyPolicies(ctx, p, in.KeyId)
	if err != nil {
		return nil, err
	}
	pg, next, err := page(names, in.Limit, in.Marker, 100)
	if err != nil {
		return nil, err
	}
	return listKeyPoliciesOutput{PolicyNames: pg, NextMarker: next, Truncated: next != ""}, nil
}

// ---- tags and description ----

type tagResourceInput struct {
	KeyId   string    `json:"KeyId"`
	Tags    []tagJSON `json:"Tags"`
	TagKeys []string  `json:"TagKeys"`
}

func (s *Server) tagResource(ctx context.Context, p string, in *tagResourceInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	if in.Tags == nil {
		return nil, required("tags")
	}
	return empty{}, s.store.TagResource(ctx, p, in.KeyId, fromTagJSON(in.Tags))
}

func (s *Server) untagResource(ctx context.Context, p string, in *tagResourceInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	if in.TagKeys == nil {
		return nil, required("tagKeys")
	}
	return empty{}, s.store.UntagResource(ctx, p, in.KeyId, in.TagKeys)
}

type listResourceTagsOutput struct {
	Tags       []tagJSON `json:"Tags"`
	NextMarker string    `json:"NextMarker,omitempty"`
	Truncated  bool      `json:"Truncated"`
}

func (s *Server) listResourceTags(ctx context.Context, p string, in *listInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	tags, err := s.store.ListResourceTags(ctx, p, in.KeyId)
	if err != nil {
		return nil, err
	}
	pg, next, err := page(tags, in.Limit, in.Marker, 50)
	if err != nil {
		return nil, err
	}
	out := listResourceTagsOutput{Tags: make([]tagJSON, 0, len(pg)), NextMarker: next, Truncated: next != ""}
	for _, t := range pg {
		out.Tags = append(out.Tags, tagJSON{TagKey: t.Key, TagValue: t.Value})
	}
	return out, nil
}

type updateDescriptionInput struct {
	KeyId       string  `json:"KeyId"`
	Description *string `json:"Description"`
}

func (s *Server) updateKeyDescription(ctx context.Context, p string, in *updateDescriptionInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	if in.Description == nil {
		return nil, required("description")
	}
	return empty{}, s.store.UpdateKeyDescription(ctx, p, in.KeyId, *in.Description)
}

// ---- grants ----

type listRetirableGrantsInput struct {
	RetiringPrincipal        string `json:"RetiringPrincipal"`
	RetiringServicePrincipal string `json:"RetiringServicePrincipal"`
	Limit                    *int   `json:"Limit"`
	Marker                   string `json:"Marker"`
}

func (s *Server) listRetirableGrants(ctx context.Context, p string, in *listRetirableGrantsInput, _ *reqLog) (any, error) {
	if in.RetiringServicePrincipal != "" {
		return nil, unsupported("RetiringServicePrincipal is not supported: this server has no AWS service principals")
	}
	if in.RetiringPrincipal == "" {
		return nil, required("retiringPrincipal")
	}
	grants, err := s.store.ListRetirableGrants(ctx, p, in.RetiringPrincipal)
	if err != nil {
		return nil, err
	}
	return s.grantList(grants, in.Limit, in.Marker)
}

// ---- rotation history ----

type listKeyRotationsInput struct {
	KeyId              string `json:"KeyId"`
	IncludeKeyMaterial string `json:"IncludeKeyMaterial"`
	Limit              *int   `json:"Limit"`
	Marker             string `json:"Marker"`
}

type rotationJSON struct {
	KeyId            string  `json:"KeyId"`
	RotationDate     float64 `json:"RotationDate"`
	RotationType     string  `json:"RotationType,omitempty"`
	KeyMaterialState string  `json:"KeyMaterialState"`
}

type listKeyRotationsOutput struct {
	Rotations  []rotationJSON `json:"Rotations"`
	NextMarker string         `json:"NextMarker,omitempty"`
	Truncated  bool           `json:"Truncated"`
}

func (s *Server) listKeyRotations(ctx context.Context, p string, in *listKeyRotationsInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	initial := false
	switch in.IncludeKeyMaterial {
	case "", "ROTATIONS_ONLY":
	case "ALL_KEY_MATERIAL":
		initial = true
	default:
		return nil, validationError("IncludeKeyMaterial %q is not valid: use ALL_KEY_MATERIAL or ROTATIONS_ONLY", in.IncludeKeyMaterial)
	}
	rots, err := s.store.ListKeyRotations(ctx, p, in.KeyId, initial)
	if err != nil {
		return nil, err
	}
	pg, next, err := page(rots, in.Limit, in.Marker, 100)
	if err != nil {
		return nil, err
	}
	out := listKeyRotationsOutput{Rotations: make([]rotationJSON, 0, len(pg)), NextMarker: next, Truncated: next != ""}
	for _, r := range pg {
		state := "NON_CURRENT"
		if r.Current {
			state = "CURRENT"
		}
		out.Rotations = append(out.Rotations, rotationJSON{KeyId: s.store.KeyARN(r.KeyID), RotationDate: epoch(r.Date),
			RotationType: r.Type, KeyMaterialState: state})
	}
	return out, nil
}

// ---- imported material ----

type deleteImportedInput struct {
	KeyId         string `json:"KeyId"`
	KeyMaterialId string `json:"KeyMaterialId"`
}

func (s *Server) deleteImportedKeyMaterial(ctx context.Context, p string, in *deleteImportedInput, rl *reqLog) (any, error) {
	if err := needKey(in.KeyId, rl); err != nil {
		return nil, err
	}
	if in.KeyMaterialId != "" {
		return nil, unsupported("KeyMaterialId is not supported: an imported key on this server has one key material, deleted without naming it")
	}
	if err := s.store.DeleteImportedKeyMaterial(ctx, p, in.KeyId); err != nil {
		return nil, err
	}
	arn := s.arnOf(ctx, p, in.KeyId)
	rl.keyID = arn
	return keyIDOutput{KeyId: arn}, nil
}
