package kms

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
)

// Anti-rollback: every save numbers the state (state.Serial, covered by the
// state MAC) and then records the number in a second file, serial, MAC'd
// under the same key. A keys.json older than the recorded number is
// refused, so putting back an old copy of keys.json (a key that was
// disabled, a grant that was revoked, a principal's key that was deleted)
// is detected. What it cannot detect: keys.json and serial rolled back
// together (a restore of the whole directory), and a keys.json from before
// the counter existed with serial deleted. A crash between the two writes
// leaves keys.json one ahead of serial, which is accepted (and serial
// catches up at the next save).
const (
	serialFile     = "serial"
	labelSerialMAC = "encvol kms serial v1\x00"
)

func (s *Store) serialMAC(n uint64) []byte {
	m := hmac.New(sha256.New, s.macKey)
	m.Write([]byte(labelSerialMAC))
	m.Write(binary.BigEndian.AppendUint64(nil, n))
	return m.Sum(nil)
}

// recordedSerial reads the serial file; ok is false when there is none.
func (s *Store) recordedSerial() (n uint64, ok bool, err error) {
	p := s.path(serialFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, internalErr("read "+p, err)
	}
	if len(data) != 8+sha256.Size {
		return 0, false, newErr(CodeInternal, "anti-rollback counter %s is %d bytes, want %d (corrupt)", p, len(data), 8+sha256.Size)
	}
	n = binary.BigEndian.Uint64(data[:8])
	if !hmac.Equal(data[8:], s.serialMAC(n)) {
		return 0, false, newErr(CodeInternal, "anti-rollback counter %s does not authenticate: it was modified, or belongs to another store", p)
	}
	return n, true, nil
}

// checkSerial refuses a keys.json that is older than the last one this
// store published.
func (s *Store) checkSerial(st *state) error {
	n, ok, err := s.recordedSerial()
	if err != nil {
		return err
	}
	p := s.path(stateFile)
	switch {
	case !ok && st.Serial > 0:
		return newErr(CodeInternal, "key state %s is save number %d but the anti-rollback counter %s is missing: it was deleted, perhaps to put back an old keys.json; restore it from the same backup as keys.json", p, st.Serial, s.path(serialFile))
	case ok && st.Serial < n:
		return newErr(CodeInternal, "key state %s is save number %d, older than the last one this store wrote (%d): an old copy of keys.json was put back (rollback); restore the newest keys.json, or keys.json and %s together from one backup", p, st.Serial, n, serialFile)
	}
	return nil
}

// recordSerial writes n to the serial file after keys.json with save
// number n was published.
func (s *Store) recordSerial(n uint64) error {
	data := binary.BigEndian.AppendUint64(nil, n)
	data = append(data, s.serialMAC(n)...)
	if err := writeFileAtomic(s.path(serialFile), data, 0o600); err != nil {
		return internalErr("write anti-rollback counter", err)
	}
	return nil
}
