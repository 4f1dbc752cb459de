package volume

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/encvol/encvol/keywrap"
)

// The marker of an unfinished copy or import (keywrap.IncompleteFile in
// the target's backing directory) says which operation writes the volume,
// from what and with which options. It is written before anything else and
// removed after the last step, so a target without it is either empty or
// complete. A rerun of the same operation finds it and resumes; anything
// else (another source, another key, a mount) is refused.
//
// Format: the line "encvol-incomplete v1", then one JSON object on one
// line; nothing else.

const (
	markerMagic   = "encvol-incomplete v"
	markerVersion = 1
	maxMarkerSize = 64 << 10
	maxMarkerText = 4096 // bound on every string field
)

// Operations a marker names.
const (
	OpImport    = "import"
	OpCopy      = "copy"
	OpReencrypt = "reencrypt"
)

// Marker describes an unfinished copy or import.
type Marker struct {
	// Operation is OpImport, OpCopy or OpReencrypt.
	Operation string `json:"operation"`
	// Source is the absolute path of what is copied or imported.
	Source string `json:"source"`
	// SourceID identifies the source beyond its path: the volume ID of a
	// copied volume or snapshot, the device and inode of an imported
	// directory.
	SourceID string `json:"source_id"`
	// KMS and Key are the target's KMS name and key as given ("" is the
	// service key).
	KMS        string `json:"kms"`
	Key        string `json:"key"`
	SectorSize int    `json:"sector_size"`
	NameMode   string `json:"name_mode"`
	// Started is when the operation first began (UTC, whole seconds).
	Started time.Time `json:"started"`
}

// ErrIncomplete is matched (errors.Is) by every refusal of a volume that an
// unfinished copy or import is still writing.
var ErrIncomplete = errors.New("volume is an unfinished copy or import")

// IncompleteError refuses a volume whose copy or import has not finished.
type IncompleteError struct {
	Backing string
	Marker  *Marker // nil when the marker could not be read
	Err     error   // why it could not be read
}

func (e *IncompleteError) Error() string {
	if e.Marker == nil {
		return fmt.Sprintf("volume %s is an unfinished copy or import (%s exists but cannot be read: %v); run the copy or import that made it again with --resume, or remove the directory",
			e.Backing, filepath.Join(e.Backing, keywrap.IncompleteFile), e.Err)
	}
	m := e.Marker
	return fmt.Sprintf("volume %s is an unfinished %s of %s started %s and cannot be used until it finishes; finish it with %s",
		e.Backing, m.Operation, m.Source, m.Started.Format(time.RFC3339), m.ResumeCommand(e.Backing))
}

func (e *IncompleteError) Unwrap() []error { return []error{ErrIncomplete, e.Err} }

// ResumeCommand is the command line that finishes the operation into
// backing.
func (m *Marker) ResumeCommand(backing string) string {
	var b strings.Builder
	b.WriteString("`encvol ")
	switch m.Operation {
	case OpReencrypt:
		b.WriteString("create --backing " + backing + " --from-snapshot " + m.Source)
	default:
		b.WriteString(m.Operation + " " + m.Source + " --backing " + backing)
	}
	if m.KMS != "" {
		b.WriteString(" --kms " + m.KMS)
	}
	if m.Key != "" {
		b.WriteString(" --key " + m.Key)
	}
	b.WriteString(" --resume`")
	return b.String()
}

// Encode returns the marker file's bytes.
func (m *Marker) Encode() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s%d\n", markerMagic, markerVersion)
	enc := json.NewEncoder(&buf) // ends the object with the newline
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode marker: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseMarker parses a marker file. Anything but exactly what Encode
// writes for a valid marker is refused with an error saying what is wrong.
func ParseMarker(b []byte) (*Marker, error) {
	if len(b) > maxMarkerSize {
		return nil, fmt.Errorf("marker of %d bytes is larger than %d", len(b), maxMarkerSize)
	}
	first, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok || !bytes.HasPrefix(first, []byte(markerMagic)) {
		return nil, errors.New("marker does not start with the line \"encvol-incomplete v1\"")
	}
	if v := string(first[len(markerMagic):]); v != fmt.Sprint(markerVersion) {
		return nil, fmt.Errorf("marker version %q is not %d: it was written by another encvol version", v, markerVersion)
	}
	body, tail, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || len(tail) != 0 {
		return nil, errors.New("marker must be exactly two lines, each ended by a newline")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m Marker
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("marker body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("marker body: data after the JSON object")
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Marker) validate() error {
	switch m.Operation {
	case OpImport, OpCopy, OpReencrypt:
	default:
		return fmt.Errorf("marker: unknown operation %q", m.Operation)
	}
	for _, f := range []struct{ name, v string }{{"source", m.Source}, {"source_id", m.SourceID}, {"kms", m.KMS}, {"key", m.Key}} {
		if len(f.v) > maxMarkerText || strings.ContainsAny(f.v, "\x00\n") {
			return fmt.Errorf("marker: %s is longer than %d bytes or holds a NUL or newline", f.name, maxMarkerText)
		}
	}
	if !filepath.IsAbs(m.Source) {
		return fmt.Errorf("marker: source %q is not an absolute path", m.Source)
	}
	if m.SourceID == "" || m.KMS == "" {
		return errors.New("marker: source_id and kms must not be empty")
	}
	if err := CheckSectorSize(m.SectorSize); err != nil {
		return fmt.Errorf("marker: sector_size %w", err)
	}
	if m.NameMode != NameModeEncrypted && m.NameMode != NameModePlaintext {
		return fmt.Errorf("marker: name_mode %q is neither %q nor %q", m.NameMode, NameModeEncrypted, NameModePlaintext)
	}
	if m.Started.IsZero() || m.Started.Location() != time.UTC || m.Started.Nanosecond() != 0 {
		return errors.New("marker: started must be a UTC time in whole seconds")
	}
	return nil
}

// sameJob returns nil when other (a rerun's marker) continues the
// operation m describes, else an error naming the first difference.
func (m *Marker) sameJob(other *Marker) error {
	diff := func(what, have, want string) error {
		if have == "" {
			have = "the service key"
		}
		if want == "" {
			want = "the service key"
		}
		return fmt.Errorf("it was started with %s %s, not %s", what, have, want)
	}
	switch {
	case m.Operation != other.Operation:
		return fmt.Errorf("it is an unfinished %s, not a %s", m.Operation, other.Operation)
	case m.Source != other.Source:
		return fmt.Errorf("it is an unfinished %s of %s, not of %s", m.Operation, m.Source, other.Source)
	case m.SourceID != other.SourceID:
		return fmt.Errorf("its source %s is no longer the one it was started from (%s, now %s)", m.Source, m.SourceID, other.SourceID)
	case m.KMS != other.KMS:
		return diff("KMS", m.KMS, other.KMS)
	case m.Key != other.Key:
		return diff("key", m.Key, other.Key)
	case m.SectorSize != other.SectorSize:
		return diff("sector size", fmt.Sprint(m.SectorSize), fmt.Sprint(other.SectorSize))
	case m.NameMode != other.NameMode:
		return diff("name mode", m.NameMode, other.NameMode)
	}
	return nil
}

// ReadMarker reads the marker of backing; an error satisfying
// errors.Is(err, fs.ErrNotExist) means there is none.
func ReadMarker(backing string) (*Marker, error) {
	path := filepath.Join(backing, keywrap.IncompleteFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMarkerSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	m, err := ParseMarker(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// writeMarker stores m in backing atomically (0600).
func writeMarker(backing string, m *Marker) error {
	b, err := m.Encode()
	if err != nil {
		return err
	}
	return keywrap.WriteFileAtomic(filepath.Join(backing, keywrap.IncompleteFile), b, 0o600)
}

// CheckComplete refuses, with an *IncompleteError, a volume that a copy or
// import is still writing.
func CheckComplete(backing string) error {
	_, err := os.Lstat(filepath.Join(backing, keywrap.IncompleteFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &IncompleteError{Backing: backing, Err: err}
	}
	m, err := ReadMarker(backing)
	if err != nil {
		return &IncompleteError{Backing: backing, Err: err}
	}
	return &IncompleteError{Backing: backing, Marker: m}
}
