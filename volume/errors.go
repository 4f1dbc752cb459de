package volume

import "errors"

// ErrBackingUnusable is matched (errors.Is) by Create's refusal of a
// backing path that cannot take a new volume: a file, a directory that is
// not empty, or one that already holds a volume. The command line reports
// it as an argument to change, unlike an I/O failure.
var ErrBackingUnusable = errors.New("backing path cannot hold a new volume")

// ErrMountpointBusy is matched by CheckMountTarget's refusal of a
// mountpoint that already holds a mount; ErrMountTarget by its other
// refusals (missing, not a directory, not empty, overlapping the backing
// directory), which are arguments to change.
var (
	ErrMountpointBusy = errors.New("mountpoint already holds a mount")
	ErrMountTarget    = errors.New("mountpoint cannot take the mount")
)

// refusedBacking gives err the kind ErrBackingUnusable and keeps its text.
func refusedBacking(err error) error { return withKind(ErrBackingUnusable, err) }

// withKind gives err the kind kind (nil stays nil) and keeps its text.
func withKind(kind, err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: kind, err: err}
}

// kindError is err with its text, also matching kind for errors.Is.
type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// ErrSourceUnusable is matched by the refusal of a copy or import source
// that cannot be read as one: missing, not a directory, not a volume.
var ErrSourceUnusable = errors.New("source cannot be copied or imported")
