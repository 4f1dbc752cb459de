//go:build goexperiment.runtimesecret && !cgo

package keywrap

import "runtime/secret"

// SecretMemory is true when the binary was built with
// GOEXPERIMENT=runtimesecret and without cgo, so Secretly erases the stack,
// registers and heap temporaries of key computations.
const SecretMemory = true

// SecretOff says why SecretMemory is false; empty here.
const SecretOff = ""

// Secretly runs f under runtime/secret.Do: the stack and registers f used are
// erased when it returns, and heap memory f allocated is erased once the
// garbage collector finds it unreachable. Goroutines started by f are not
// covered. Results that must outlive f should be copied into memory the caller
// allocated (for keys: into a Key).
func Secretly(f func()) { secret.Do(f) }
