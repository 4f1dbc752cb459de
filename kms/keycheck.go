package kms

import "strings"

// KeyCheckHeader is the HTTP request header by which a client marks a
// Decrypt as a mounted volume's periodic key check (see KeyCheck). The
// server honours it only when the request's SigV4 signature covers it.
const KeyCheckHeader = "X-Encvol-Key-Check"

// maxMountIDLen bounds KeyCheck.Mount: it is held in memory per mount and
// written into audit records.
const maxMountIDLen = 64

// KeyCheck marks a Decrypt as one of the periodic key checks of one mount.
// The call is authorized exactly like any Decrypt and its result is the
// same; only its audit record differs: checks of a mount that repeat the
// previous result are counted into one summary record per interval instead of one
// record each (see checkSummaries). Marking a call therefore changes what
// the log spells out, never what the caller may do.
type KeyCheck struct {
	// Mount identifies the mount, the same for all its checks; chosen by
	// the client (letters, digits, '.', '_', '-'; at most 64).
	Mount string
	// Last marks the final check of the mount, made as it ends.
	Last bool
}

// validate reports whether the mount ID is acceptable.
func (c KeyCheck) validate() *Error {
	if c.Mount == "" || len(c.Mount) > maxMountIDLen {
		return validationErr("key check mount ID must be 1 to %d characters, got %d", maxMountIDLen, len(c.Mount))
	}
	for _, r := range c.Mount {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return validationErr("key check mount ID %q may hold only letters, digits, '.', '_' and '-'", c.Mount)
		}
	}
	return nil
}

// HeaderValue is c as KeyCheckHeader carries it: "MOUNT" or "MOUNT; last".
func (c KeyCheck) HeaderValue() string {
	if c.Last {
		return c.Mount + "; last"
	}
	return c.Mount
}

// ParseKeyCheck reads a KeyCheckHeader value.
func ParseKeyCheck(v string) (KeyCheck, error) {
	mount, flag, hasFlag := strings.Cut(v, ";")
	c := KeyCheck{Mount: strings.TrimSpace(mount)}
	if hasFlag {
		if strings.TrimSpace(flag) != "last" {
			return KeyCheck{}, validationErr("%s: unknown flag %q (the only one is \"last\")", KeyCheckHeader, strings.TrimSpace(flag))
		}
		c.Last = true
	}
	if err := c.validate(); err != nil {
		return KeyCheck{}, validationErr("%s: %s", KeyCheckHeader, err.Message)
	}
	return c, nil
}
