package kms

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The identity a store has unless Options name another: the local KMS's.
// Every ARN written before stores could have another identity carries it,
// so references in it resolve in every store (volume headers keep the key
// ARN they were created with).
const (
	DefaultRegion  = "local"
	DefaultAccount = "000000000000"
)

var (
	regionRE  = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
)

// CheckRegion refuses a region that cannot stand in an ARN.
func CheckRegion(region string) error {
	if len(region) > 32 || !regionRE.MatchString(region) {
		return fmt.Errorf("region %q is not a region name: use lower-case letters, digits and dashes, such as us-east-1", region)
	}
	return nil
}

// CheckAccount refuses an account ID that is not 12 digits, as AWS's are.
func CheckAccount(account string) error {
	if !accountRE.MatchString(account) {
		return fmt.Errorf("account ID %q is not 12 digits, such as 111122223333", account)
	}
	return nil
}

// identity is a region and account a store has served under. keys.json
// lists every one, so that ARNs handed out under any of them keep
// resolving when the store is opened under another (a server restarted
// with --region, or the local KMS opening a store a server wrote).
type identity struct {
	Region  string `json:"region"`
	Account string `json:"account"`
}

// knows reports whether region and account name this store: its current
// identity, the default one or one it had before.
func (s *Store) knows(st *state, region, account string) bool {
	if (region == s.region && account == s.account) || (region == DefaultRegion && account == DefaultAccount) {
		return true
	}
	return st != nil && slices.Contains(st.Identities, identity{Region: region, Account: account})
}

// knowsAccount reports whether account is one this store has served.
func (s *Store) knowsAccount(st *state, account string) bool {
	if account == s.account || account == DefaultAccount {
		return true
	}
	if st != nil {
		for _, id := range st.Identities {
			if id.Account == account {
				return true
			}
		}
	}
	return false
}

// recordIdentity adds the store's current identity to st; it reports
// whether st changed.
func (s *Store) recordIdentity(st *state) bool {
	me := identity{Region: s.region, Account: s.account}
	if me == (identity{Region: DefaultRegion, Account: DefaultAccount}) || slices.Contains(st.Identities, me) {
		return false
	}
	st.Identities = append(st.Identities, me)
	return true
}

// Region and Account return the identity the store's ARNs carry.
func (s *Store) Region() string  { return s.region }
func (s *Store) Account() string { return s.account }

// KeyARN is the ARN of the key with ID id in the store's identity.
func (s *Store) KeyARN(id string) string { return s.keyARN(id) }

// PrincipalARN is the IAM user ARN of a principal name in this store's
// account: how AWS names the caller, and the form in which principals are
// returned (grants, key policies).
func (s *Store) PrincipalARN(name string) string {
	return "arn:aws:iam::" + s.account + ":user/" + name
}

// AccountRootARN is the ARN AWS uses for the account as a whole (a grant's
// IssuingAccount).
func (s *Store) AccountRootARN() string { return "arn:aws:iam::" + s.account + ":root" }

// principalName turns a principal reference, a bare principal name or the
// IAM user ARN of one (arn:aws:iam::ACCOUNT:user/NAME) in an account the
// store has served, into the name. what names the field for the error.
func (s *Store) principalName(st *state, what, ref string) (string, error) {
	if !strings.HasPrefix(ref, "arn:") {
		if strings.TrimSpace(ref) == "" || strings.ContainsAny(ref, "\x00\n\r\t") {
			return "", validationErr("%s %q is not a principal name", what, ref)
		}
		return ref, nil
	}
	parts := strings.SplitN(ref, ":", 6)
	if len(parts) != 6 || parts[1] != "aws" || parts[2] != "iam" || parts[3] != "" {
		return "", newErr(CodeInvalidArn, "%s %s is not an IAM principal ARN; name a principal as arn:aws:iam::%s:user/NAME or as NAME", what, ref, s.account)
	}
	account, res := parts[4], parts[5]
	if !s.knowsAccount(st, account) {
		return "", newErr(CodeInvalidArn, "%s %s is in account %s; this KMS serves account %s and knows no principals of other accounts", what, ref, account, s.account)
	}
	name, ok := strings.CutPrefix(res, "user/")
	if !ok || name == "" {
		return "", newErr(CodeInvalidArn, "%s %s is not an IAM user: the principals of this KMS are users, named arn:aws:iam::%s:user/NAME or NAME", what, ref, s.account)
	}
	return name, nil
}
