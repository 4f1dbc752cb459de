package volume

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/encvol/encvol/keywrap"
)

// The snapshot manifest (docs/format.md, "Snapshots"): three lines, like
// the volume header. The body is canonical JSON; the MAC is HMAC-SHA256
// under a key derived from the volume's DK, so only a holder of the key can
// write a manifest that authenticates, and a snapshot cannot be passed off
// as another volume's or another header's.

// ManifestFile is the manifest's name in a snapshot directory.
const ManifestFile = "encvol.snapshot"

const (
	manifestVersion   = 1
	manifestMagicLine = "encvol-snapshot v1\n"
	manifestMACPrefix = "mac: "
	maxManifestSize   = 16 << 10
	manifestTime      = "2006-01-02T15:04:05.000000000Z"
	maxSnapshotName   = 200
)

// Manifest errors: every failure of ParseManifest wraps ErrManifestCorrupt,
// of Verify ErrManifestMAC.
var (
	ErrManifestCorrupt = errors.New("snapshot manifest corrupt")
	ErrManifestMAC     = errors.New("snapshot manifest failed its authentication (modified, or not made with this volume's key)")
)

// Manifest describes one snapshot.
type Manifest struct {
	SnapshotID string    // "snap-" + 32 lowercase hex digits
	Name       string    // the snapshot directory's name
	VolumeID   string    // the volume the snapshot was taken of
	Created    time.Time // UTC
	Entries    int       // entries of the backing copy, its root not counted
	// HeaderSHA256 is the SHA-256 of the snapshot's volume header file:
	// it binds the manifest to that header (wrapped key, volume ID).
	HeaderSHA256 string

	mac []byte
}

// manifestJSON is the wire form; field order is the canonical order.
type manifestJSON struct {
	Version      int    `json:"version"`
	SnapshotID   string `json:"snapshot_id"`
	Name         string `json:"name"`
	VolumeID     string `json:"volume_id"`
	Created      string `json:"created"`
	Entries      int    `json:"entries"`
	HeaderSHA256 string `json:"header_sha256"`
}

var (
	snapshotIDRe  = regexp.MustCompile(`^snap-[0-9a-f]{32}$`)
	manifestVolRe = regexp.MustCompile(`^vol-[0-9a-f]{32}$`)
	sha256HexRe   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// NewSnapshotID returns "snap-" followed by 128 random bits in hex.
func NewSnapshotID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new snapshot id: %w", err)
	}
	return "snap-" + hex.EncodeToString(b[:]), nil
}

// CheckSnapshotName accepts a name for a snapshot directory: 1..200 bytes,
// no slash or NUL, not starting with a dot (dot names are work in
// progress), not "." or "..".
func CheckSnapshotName(name string) error {
	switch {
	case name == "":
		return errors.New("the snapshot name is empty")
	case len(name) > maxSnapshotName:
		return fmt.Errorf("the snapshot name is longer than %d bytes", maxSnapshotName)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("the snapshot name %q contains a slash or NUL", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("the snapshot name %q starts with a dot, which marks unfinished snapshots", name)
	}
	return nil
}

func manifestCorrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrManifestCorrupt, fmt.Sprintf(format, a...))
}

func (m *Manifest) validate() error {
	switch {
	case !snapshotIDRe.MatchString(m.SnapshotID):
		return manifestCorrupt("snapshot_id %q is not snap-<32 lowercase hex digits>", m.SnapshotID)
	case !manifestVolRe.MatchString(m.VolumeID):
		return manifestCorrupt("volume_id %q is not vol-<32 lowercase hex digits>", m.VolumeID)
	case m.Entries < 0:
		return manifestCorrupt("entries %d is negative", m.Entries)
	case !sha256HexRe.MatchString(m.HeaderSHA256):
		return manifestCorrupt("header_sha256 %q is not 64 lowercase hex digits", m.HeaderSHA256)
	case m.Created.IsZero() || m.Created.Location() != time.UTC:
		return manifestCorrupt("created %v is not a UTC time", m.Created)
	}
	if err := CheckSnapshotName(m.Name); err != nil {
		return manifestCorrupt("name: %v", err)
	}
	return nil
}

func (m *Manifest) body() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(manifestJSON{
		Version: manifestVersion, SnapshotID: m.SnapshotID, Name: m.Name, VolumeID: m.VolumeID,
		Created: m.Created.Format(manifestTime), Entries: m.Entries, HeaderSHA256: m.HeaderSHA256,
	})
	if err != nil {
		return nil, fmt.Errorf("encode snapshot manifest: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func manifestMACInput(body []byte) []byte {
	in := make([]byte, 0, len(manifestMagicLine)+len(body)+1)
	in = append(in, manifestMagicLine...)
	in = append(in, body...)
	return append(in, '\n')
}

// manifestMAC is HMAC-SHA256 of msg under the manifest key derived from dk.
func manifestMAC(dk *keywrap.Key, msg []byte) ([]byte, error) {
	key, err := keywrap.DeriveSubkey(dk, keywrap.LabelSnapshotManifest, keywrap.SubkeyLen)
	if err != nil {
		return nil, fmt.Errorf("snapshot manifest key: %w", err)
	}
	defer key.Close()
	sum := make([]byte, sha256.Size)
	keywrap.Secretly(func() {
		h := hmac.New(sha256.New, key.Bytes())
		h.Write(msg)
		copy(sum, h.Sum(nil))
	})
	return sum, nil
}

// Encode returns the manifest file authenticated under dk.
func (m *Manifest) Encode(dk *keywrap.Key) ([]byte, error) {
	body, err := m.body()
	if err != nil {
		return nil, err
	}
	in := manifestMACInput(body)
	mac, err := manifestMAC(dk, in)
	if err != nil {
		return nil, err
	}
	m.mac = mac
	out := append(in, manifestMACPrefix...)
	out = append(out, hex.EncodeToString(mac)...)
	return append(out, '\n'), nil
}

// Verify checks the MAC read by ParseManifest under dk, in constant time.
func (m *Manifest) Verify(dk *keywrap.Key) error {
	body, err := m.body()
	if err != nil {
		return err
	}
	want, err := manifestMAC(dk, manifestMACInput(body))
	if err != nil {
		return err
	}
	if len(m.mac) != sha256.Size || !hmac.Equal(want, m.mac) {
		return ErrManifestMAC
	}
	return nil
}

// ParseManifest reads a manifest file strictly: the magic line, the
// canonical body and the MAC line, nothing else. It does not check the MAC
// (Verify does, with the key).
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifestSize {
		return nil, manifestCorrupt("%d bytes, more than %d", len(data), maxManifestSize)
	}
	rest, ok := bytes.CutPrefix(data, []byte(manifestMagicLine))
	if !ok {
		return nil, manifestCorrupt("first line is not %q", strings.TrimSpace(manifestMagicLine))
	}
	body, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, manifestCorrupt("no MAC line")
	}
	macLine, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || len(rest) != 0 {
		return nil, manifestCorrupt("want exactly three lines, each ended by a newline")
	}
	macHex, ok := bytes.CutPrefix(macLine, []byte(manifestMACPrefix))
	if !ok || !sha256HexRe.Match(macHex) {
		return nil, manifestCorrupt("MAC line is not %q and 64 lowercase hex digits", manifestMACPrefix)
	}
	var w manifestJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, manifestCorrupt("body: %v", err)
	}
	if dec.More() {
		return nil, manifestCorrupt("body: data after the JSON object")
	}
	if w.Version != manifestVersion {
		return nil, manifestCorrupt("version %d (this build reads version %d)", w.Version, manifestVersion)
	}
	created, err := time.Parse(manifestTime, w.Created)
	if err != nil {
		return nil, manifestCorrupt("created %q is not %s", w.Created, manifestTime)
	}
	m := &Manifest{SnapshotID: w.SnapshotID, Name: w.Name, VolumeID: w.VolumeID, Created: created.UTC(),
		Entries: w.Entries, HeaderSHA256: w.HeaderSHA256}
	canon, err := m.body()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, body) {
		return nil, manifestCorrupt("body is not in canonical form")
	}
	m.mac, _ = hex.DecodeString(string(macHex))
	return m, nil
}
