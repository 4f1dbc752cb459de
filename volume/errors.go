package volume

import "errors"

// ErrBackingUnusable is matched (errors.Is) by Create's refusal of a
// backing path that cannot take a new volume: a file, a directory that is
// not empty, or one that already holds a volume. The command line reports
// it as an argument to change, unlike an I/O failure.
var ErrBackingUnusable = errors.New("backing path cannot hold a new volume")

// refusedBacking gives err the kind ErrBackingUnusable and keeps its text.
func refusedBacking(err error) error { return &kindError{kind: ErrBackingUnusable, err: err} }

// kindError is err with its text, also matching kind for errors.Is.
type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
