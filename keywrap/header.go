package keywrap

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// HeaderFile is the name of the volume header in the backing directory.
const HeaderFile = "encvol.volume"

// IncompleteFile marks a backing directory whose volume is still being
// written by a copy or an import: while it exists the volume is not
// complete and must not be mounted. Its format belongs to package volume.
const IncompleteFile = "encvol.incomplete"

// Header format versions. Version 1 has no key-check blob; version 2 adds
// key_check (Header.KeyCheck), which lets a mount check its access to the
// key without the KMS sending the data key again. Both are read and
// written: a version 1 header stays version 1 until SetKeyCheck.
// Version 3 has the fields of version 2 and says that the volume's entries
// carry authenticated metadata (docs/format.md, "Version 3"); older volumes
// keep their version until they are copied.
// Version 4 has the fields of version 3 and says that the volume's files
// authenticate their holes (sector-file version 3, docs/format.md).
// Version 5 has the fields of version 4 and says that the metadata record
// of every regular file and directory names the entry it belongs to (its
// directory and name), docs/format.md, "Version 5".
const (
	HeaderVersion         = 1
	HeaderVersionKeyCheck = 2
	HeaderVersionAuth     = 3
	HeaderVersionHoles    = 4
	HeaderVersionEntries  = 5
)

// knownVersion reports whether this build reads header version v.
func knownVersion(v int) bool { return v >= HeaderVersion && v <= HeaderVersionEntries }

// versionsRead names the header versions this build reads, for errors.
const versionsRead = "1 to 5"

// MaxHeaderSize bounds the header file; anything larger is corrupt.
const MaxHeaderSize = 64 << 10

// Values of the header fields that this version understands.
const (
	CipherAES256GCM    = "AES-256-GCM"
	NameModeEncrypted  = "encrypted"
	NameModePlaintext  = "plaintext"
	ContextVolumeID    = "encvol:volume-id" // required key of Header.EncryptionContext
	MinSectorSize      = 512
	MaxSectorSize      = 65536
	headerMagicPrefix  = "encvol-volume v"
	headerMACPrefix    = "mac: "
	createdLayout      = "2006-01-02T15:04:05Z"
	maxWrappedDKLen    = 8 << 10
	maxHeaderStringLen = 2048
)

// Header errors. Every error from ParseHeader, ReadHeader and Validate wraps
// exactly one of them, with a message that says which field or byte is wrong.
var (
	ErrHeaderCorrupt = errors.New("keywrap: volume header corrupt")
	ErrHeaderMAC     = errors.New("keywrap: volume header authentication failed (tampered header or wrong key)")
	ErrHeaderVersion = errors.New("keywrap: unsupported volume header version")
	// ErrHeaderVolumeMismatch is returned by RestoreHeader and BackupHeader
	// when the target already holds the header of a different volume.
	ErrHeaderVolumeMismatch = errors.New("keywrap: header belongs to a different volume")
)

// Header is the content of the volume header file. Only the wrapped DK is
// stored; the header is authenticated with HMAC-SHA256 under the HeaderMAC
// subkey, so it can be checked only after the KMS unwrapped the DK.
type Header struct {
	Version   int    // HeaderVersion
	VolumeID  string // "vol-" + 32 lowercase hex digits
	KMS       string // name of the configured KMS ([kms.NAME]) used at create
	KeyID     string // key ARN as returned by the KMS at create
	WrappedDK []byte // KMS ciphertext blob of the DK
	// KeyCheck (version 2) is a KMS ciphertext blob, under the same key
	// and encryption context as WrappedDK, of KeyCheckPlaintext(VolumeID):
	// what a mount decrypts to check its access, so routine checks never
	// carry the DK.
	KeyCheck          []byte
	EncryptionContext map[string]string // at least {ContextVolumeID: VolumeID}
	Cipher            string            // CipherAES256GCM
	SectorSize        int               // power of two MinSectorSize..MaxSectorSize
	NameMode          string            // NameModeEncrypted or NameModePlaintext
	Created           time.Time         // UTC, whole seconds

	mac []byte // MAC read from disk (ParseHeader) or last written (WriteHeader)
}

// headerJSON is the wire form. Field order here is the canonical order.
type headerJSON struct {
	Version           int               `json:"version"`
	VolumeID          string            `json:"volume_id"`
	KMS               string            `json:"kms"`
	KeyID             string            `json:"key_id"`
	WrappedDK         string            `json:"wrapped_dk"`
	KeyCheck          string            `json:"key_check,omitempty"`
	EncryptionContext map[string]string `json:"encryption_context"`
	Cipher            string            `json:"cipher"`
	SectorSize        int               `json:"sector_size"`
	NameMode          string            `json:"name_mode"`
	Created           string            `json:"created"`
}

var volumeIDRe = regexp.MustCompile(`^vol-[0-9a-f]{32}$`)

// NewVolumeID returns "vol-" followed by 128 random bits in lowercase hex.
func NewVolumeID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("keywrap: new volume id: %w", err)
	}
	return "vol-" + hex.EncodeToString(b[:]), nil
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrHeaderCorrupt, fmt.Sprintf(format, a...))
}

// Validate checks every field for sanity. Errors wrap ErrHeaderVersion for a
// version other than HeaderVersion and ErrHeaderCorrupt otherwise.
func (h *Header) Validate() error {
	switch h.Version {
	case HeaderVersion:
		if len(h.KeyCheck) != 0 {
			return corrupt("key_check in a version %d header", HeaderVersion)
		}
	case HeaderVersionKeyCheck, HeaderVersionAuth, HeaderVersionHoles, HeaderVersionEntries:
		if len(h.KeyCheck) == 0 || len(h.KeyCheck) > maxWrappedDKLen {
			return corrupt("key_check has %d bytes (want 1..%d)", len(h.KeyCheck), maxWrappedDKLen)
		}
	default:
		return fmt.Errorf("%w: version %d (this build reads versions %s)", ErrHeaderVersion, h.Version, versionsRead)
	}
	if !volumeIDRe.MatchString(h.VolumeID) {
		return corrupt("volume_id %q is not vol-<32 lowercase hex digits>", h.VolumeID)
	}
	if err := checkText("kms", h.KMS); err != nil {
		return err
	}
	if err := checkText("key_id", h.KeyID); err != nil {
		return err
	}
	if len(h.WrappedDK) == 0 || len(h.WrappedDK) > maxWrappedDKLen {
		return corrupt("wrapped_dk has %d bytes (want 1..%d)", len(h.WrappedDK), maxWrappedDKLen)
	}
	if got, ok := h.EncryptionContext[ContextVolumeID]; !ok || got != h.VolumeID {
		return corrupt("encryption_context[%q] = %q, want the volume id %q", ContextVolumeID, got, h.VolumeID)
	}
	for k, v := range h.EncryptionContext {
		if err := checkText("encryption_context key", k); err != nil {
			return err
		}
		if len(v) > maxHeaderStringLen {
			return corrupt("encryption_context[%q] longer than %d bytes", k, maxHeaderStringLen)
		}
	}
	if h.Cipher != CipherAES256GCM {
		return corrupt("cipher %q (want %q)", h.Cipher, CipherAES256GCM)
	}
	if s := h.SectorSize; s < MinSectorSize || s > MaxSectorSize || s&(s-1) != 0 {
		return corrupt("sector_size %d is not a power of two in %d..%d", s, MinSectorSize, MaxSectorSize)
	}
	if h.NameMode != NameModeEncrypted && h.NameMode != NameModePlaintext {
		return corrupt("name_mode %q (want %q or %q)", h.NameMode, NameModeEncrypted, NameModePlaintext)
	}
	if h.Created.IsZero() || h.Created.Location() != time.UTC || h.Created.Nanosecond() != 0 {
		return corrupt("created %v is not a UTC time in whole seconds", h.Created)
	}
	if y := h.Created.Year(); y < 2000 || y > 9999 {
		return corrupt("created year %d out of range", y)
	}
	return nil
}

func checkText(field, s string) error {
	if s == "" {
		return corrupt("%s is empty", field)
	}
	if len(s) > maxHeaderStringLen {
		return corrupt("%s longer than %d bytes", field, maxHeaderStringLen)
	}
	return nil
}

// body returns the canonical JSON body (one line, no trailing newline).
func (h *Header) body() ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	w := headerJSON{
		Version:           h.Version,
		VolumeID:          h.VolumeID,
		KMS:               h.KMS,
		KeyID:             h.KeyID,
		WrappedDK:         base64.StdEncoding.EncodeToString(h.WrappedDK),
		KeyCheck:          base64.StdEncoding.EncodeToString(h.KeyCheck),
		EncryptionContext: h.EncryptionContext,
		Cipher:            h.Cipher,
		SectorSize:        h.SectorSize,
		NameMode:          h.NameMode,
		Created:           h.Created.Format(createdLayout),
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&w); err != nil {
		return nil, fmt.Errorf("keywrap: encode header: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// magicLine is the first line of a header of version v.
func magicLine(v int) string { return headerMagicPrefix + strconv.Itoa(v) + "\n" }

// macInput is the byte string the MAC covers: the magic line, the body and the
// newline that ends the body.
func macInput(version int, body []byte) []byte {
	magic := magicLine(version)
	in := make([]byte, 0, len(magic)+len(body)+1)
	in = append(in, magic...)
	in = append(in, body...)
	return append(in, '\n')
}

// KeyCheckPlaintext is what Header.KeyCheck decrypts to: SHA-256 of
// "encvol key check v1 " and the volume ID, 32 bytes like a data key (what
// KMS clients expect a volume's Decrypt to return). It is no secret: the
// blob proves only that the KMS lets the caller decrypt under the key and
// the volume's encryption context, as the data key needs.
func KeyCheckPlaintext(volumeID string) []byte {
	sum := sha256.Sum256([]byte("encvol key check v1 " + volumeID))
	return sum[:]
}

// SetKeyCheck stores the key-check blob and makes h a version 2 header,
// or leaves it at version 3 and later.
func (h *Header) SetKeyCheck(blob []byte) {
	h.KeyCheck = bytes.Clone(blob)
	h.Version = max(h.Version, HeaderVersionKeyCheck)
}

// AuthMeta reports whether the volume's entries carry authenticated
// metadata (header version 3 and later).
func (h *Header) AuthMeta() bool { return h.Version >= HeaderVersionAuth }

// AuthHoles reports whether the volume's files authenticate their holes
// (header version 4 and later).
func (h *Header) AuthHoles() bool { return h.Version >= HeaderVersionHoles }

// BindEntries reports whether the metadata of the volume's regular files
// and directories is bound to their name and directory (header version 5
// and later).
func (h *Header) BindEntries() bool { return h.Version >= HeaderVersionEntries }

func computeMAC(macKey *Key, msg []byte) ([]byte, error) {
	if macKey == nil {
		return nil, fmt.Errorf("keywrap: header mac: nil key")
	}
	macKey.mu.RLock()
	defer macKey.mu.RUnlock()
	if macKey.mem == nil {
		return nil, fmt.Errorf("keywrap: header mac: %w", ErrClosed)
	}
	sum := make([]byte, sha256.Size)
	Secretly(func() {
		m := hmac.New(sha256.New, macKey.mem[:macKey.n])
		m.Write(msg)
		copy(sum, m.Sum(nil))
	})
	return sum, nil
}

// Encode returns the complete header file: magic line, canonical JSON body,
// and the MAC line under macKey. It also remembers the MAC, so VerifyMAC works
// on h afterwards.
func (h *Header) Encode(macKey *Key) ([]byte, error) {
	body, err := h.body()
	if err != nil {
		return nil, err
	}
	in := macInput(h.Version, body)
	mac, err := computeMAC(macKey, in)
	if err != nil {
		return nil, err
	}
	h.mac = mac
	out := append(in, headerMACPrefix...)
	out = append(out, hex.EncodeToString(mac)...)
	return append(out, '\n'), nil
}

// VerifyMAC recomputes the MAC over h's canonical encoding and compares it in
// constant time with the MAC read from disk. It returns an error wrapping
// ErrHeaderMAC if they differ or h has no MAC (was not parsed or written).
func (h *Header) VerifyMAC(macKey *Key) error {
	if len(h.mac) != sha256.Size {
		return fmt.Errorf("%w: header carries no MAC", ErrHeaderMAC)
	}
	body, err := h.body()
	if err != nil {
		return err
	}
	want, err := computeMAC(macKey, macInput(h.Version, body))
	if err != nil {
		return err
	}
	if !hmac.Equal(want, h.mac) {
		return ErrHeaderMAC
	}
	return nil
}

// ParseHeader parses a header file strictly: magic line, one canonical JSON
// body line (no unknown or duplicate fields, exact key order and spacing,
// strict base64), one MAC line, nothing else, at most MaxHeaderSize bytes. It
// then runs Validate. It does not check the MAC, which needs the DK.
func ParseHeader(data []byte) (*Header, error) {
	if len(data) > MaxHeaderSize {
		return nil, corrupt("%d bytes, more than the %d byte limit", len(data), MaxHeaderSize)
	}
	magic, rest, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		return nil, corrupt("no complete magic line (truncated?)")
	}
	if !bytes.HasPrefix(magic, []byte(headerMagicPrefix)) {
		return nil, corrupt("not an encvol volume header (first line %q)", clip(magic))
	}
	magicVersion, err := strconv.Atoi(string(magic[len(headerMagicPrefix):]))
	if err != nil || magicVersion <= 0 || strconv.Itoa(magicVersion) != string(magic[len(headerMagicPrefix):]) {
		return nil, corrupt("bad magic line %q", clip(magic))
	}
	if !knownVersion(magicVersion) {
		return nil, fmt.Errorf("%w: format version %d (this build reads versions %s)", ErrHeaderVersion, magicVersion, versionsRead)
	}
	body, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, corrupt("body line not terminated (truncated?)")
	}
	macLine, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, corrupt("mac line missing or not terminated (truncated?)")
	}
	if len(rest) != 0 {
		return nil, corrupt("%d unexpected bytes after the mac line", len(rest))
	}
	if !bytes.HasPrefix(macLine, []byte(headerMACPrefix)) {
		return nil, corrupt("third line does not start with %q", headerMACPrefix)
	}
	macHex := macLine[len(headerMACPrefix):]
	if len(macHex) != 2*sha256.Size || strings.ToLower(string(macHex)) != string(macHex) {
		return nil, corrupt("mac is not %d lowercase hex digits", 2*sha256.Size)
	}
	mac, err := hex.DecodeString(string(macHex))
	if err != nil {
		return nil, corrupt("mac is not hex: %v", err)
	}
	h, err := parseBody(body)
	if err != nil {
		return nil, err
	}
	if h.Version != magicVersion {
		return nil, corrupt("magic line says version %d, the body %d", magicVersion, h.Version)
	}
	h.mac = mac
	return h, nil
}

func parseBody(body []byte) (*Header, error) {
	if err := checkDuplicates(body); err != nil {
		return nil, err
	}
	// Look at the version first: a future version may carry fields this
	// build does not know, and that deserves ErrHeaderVersion, not "unknown
	// field".
	var probe struct {
		Version json.RawMessage `json:"version"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, corrupt("body is not a JSON object: %v", err)
	}
	if probe.Version == nil {
		return nil, corrupt("body has no version field")
	}
	v, err := strconv.Atoi(string(probe.Version))
	if err != nil || strconv.Itoa(v) != string(probe.Version) {
		return nil, corrupt("version %s is not a plain integer", clip(probe.Version))
	}
	if !knownVersion(v) {
		return nil, fmt.Errorf("%w: body version %d (this build reads versions %s)", ErrHeaderVersion, v, versionsRead)
	}
	var w headerJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, corrupt("body: %v", err)
	}
	if dec.More() {
		return nil, corrupt("body: data after the JSON object")
	}
	dk, err := base64.StdEncoding.Strict().DecodeString(w.WrappedDK)
	if err != nil {
		return nil, corrupt("wrapped_dk is not padded standard base64: %v", err)
	}
	check, err := base64.StdEncoding.Strict().DecodeString(w.KeyCheck)
	if err != nil {
		return nil, corrupt("key_check is not padded standard base64: %v", err)
	}
	created, err := time.Parse(createdLayout, w.Created)
	if err != nil {
		return nil, corrupt("created %q is not YYYY-MM-DDTHH:MM:SSZ: %v", clip([]byte(w.Created)), err)
	}
	h := &Header{
		Version:           w.Version,
		VolumeID:          w.VolumeID,
		KMS:               w.KMS,
		KeyID:             w.KeyID,
		WrappedDK:         dk,
		KeyCheck:          check,
		EncryptionContext: w.EncryptionContext,
		Cipher:            w.Cipher,
		SectorSize:        w.SectorSize,
		NameMode:          w.NameMode,
		Created:           created.UTC(),
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	// One byte string per header: anything that would re-encode differently
	// (spacing, key order, escapes, missing fields) is refused, so the MAC
	// input is exactly the bytes on disk.
	canon, err := h.body()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, body) {
		return nil, corrupt("body is not in canonical form (spacing, field order, escaping or a missing field)")
	}
	return h, nil
}

// checkDuplicates walks the JSON tokens and refuses a key that occurs twice in
// one object; encoding/json would silently keep the last one.
func checkDuplicates(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		obj    bool
		keys   map[string]bool
		expKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return corrupt("body is not valid JSON: %v", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if top != nil && top.obj {
					top.expKey = true
				}
				stack = append(stack, &frame{obj: d == '{', keys: map[string]bool{}, expKey: true})
				if len(stack) > 8 {
					return corrupt("body nested too deeply")
				}
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top != nil && top.obj {
			if top.expKey {
				k, _ := tok.(string)
				if top.keys[k] {
					return corrupt("duplicate field %q", clip([]byte(k)))
				}
				top.keys[k] = true
				top.expKey = false
			} else {
				top.expKey = true
			}
		}
	}
}

// clip shortens attacker-controlled bytes before they go into an error message.
func clip(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// ReadHeader reads and parses BACKING/encvol.volume. Errors name the path.
func ReadHeader(backingDir string) (*Header, error) {
	path := filepath.Join(backingDir, HeaderFile)
	data, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	h, err := ParseHeader(data)
	if err != nil {
		return nil, fmt.Errorf("read header %s: %w", path, err)
	}
	return h, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read header %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxHeaderSize+1))
	if err != nil {
		return nil, fmt.Errorf("read header %s: %w", path, err)
	}
	if len(data) > MaxHeaderSize {
		return nil, fmt.Errorf("read header %s: %w", path, corrupt("larger than %d bytes", MaxHeaderSize))
	}
	return data, nil
}

// WriteHeader encodes h with its MAC under macKey and replaces
// BACKING/encvol.volume atomically with mode 0600: a crash leaves either the
// old or the new header, never a mix.
func WriteHeader(backingDir string, h *Header, macKey *Key) error {
	path := filepath.Join(backingDir, HeaderFile)
	data, err := h.Encode(macKey)
	if err != nil {
		return fmt.Errorf("write header %s: %w", path, err)
	}
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write header %s: %w", path, err)
	}
	return nil
}

// BackupHeader copies BACKING/encvol.volume to dst (atomically, mode 0600).
// The source must parse (a backup of a corrupt header is refused). An existing
// dst is replaced only if it is a header of the same volume: the header of
// another volume (ErrHeaderVolumeMismatch) or a file that is no header is
// never overwritten.
func BackupHeader(backingDir, dst string) error {
	src := filepath.Join(backingDir, HeaderFile)
	data, err := readLimited(src)
	if err != nil {
		return fmt.Errorf("backup header: %w", err)
	}
	h, err := ParseHeader(data)
	if err != nil {
		return fmt.Errorf("backup header: %s does not parse: %w", src, err)
	}
	if err := checkTarget(dst, h.VolumeID, false); err != nil {
		return fmt.Errorf("backup header to %s: %w", dst, err)
	}
	if err := WriteFileAtomic(dst, data, 0o600); err != nil {
		return fmt.Errorf("backup header to %s: %w", dst, err)
	}
	return nil
}

// RestoreHeader replaces BACKING/encvol.volume with the header file src. src
// must parse (its MAC can only be checked by unlocking the volume afterwards).
// If the current header parses and belongs to a different volume, restore is
// refused with ErrHeaderVolumeMismatch; use RestoreHeaderForce to override. A
// missing or corrupt current header is replaced (that is what restore is for).
func RestoreHeader(backingDir, src string) error {
	return restoreHeader(backingDir, src, false)
}

// RestoreHeaderForce is RestoreHeader without the volume ID check.
func RestoreHeaderForce(backingDir, src string) error {
	return restoreHeader(backingDir, src, true)
}

func restoreHeader(backingDir, src string, force bool) error {
	data, err := readLimited(src)
	if err != nil {
		return fmt.Errorf("restore header: %w", err)
	}
	h, err := ParseHeader(data)
	if err != nil {
		return fmt.Errorf("restore header: %s does not parse: %w", src, err)
	}
	dst := filepath.Join(backingDir, HeaderFile)
	if !force {
		if err := checkTarget(dst, h.VolumeID, true); err != nil {
			return fmt.Errorf("restore header to %s: %w", dst, err)
		}
	}
	if err := WriteFileAtomic(dst, data, 0o600); err != nil {
		return fmt.Errorf("restore header to %s: %w", dst, err)
	}
	return nil
}

// checkTarget refuses to overwrite a parseable header of another volume, and
// (unless replaceCorrupt) any existing file that is not a header at all.
func checkTarget(path, volumeID string, replaceCorrupt bool) error {
	data, err := readLimited(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	old, err := ParseHeader(data)
	if err != nil {
		if replaceCorrupt {
			return nil
		}
		return fmt.Errorf("refusing to overwrite %s, which is not an encvol header: %w", path, err)
	}
	if old.VolumeID != volumeID {
		return fmt.Errorf("%w: existing %s, new %s", ErrHeaderVolumeMismatch, old.VolumeID, volumeID)
	}
	return nil
}
