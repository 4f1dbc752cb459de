//go:build !goexperiment.runtimesecret

package keywrap

// SecretMemory is false: the binary was built without
// GOEXPERIMENT=runtimesecret, so temporaries of key computations on the Go
// stack and heap are not erased (keys themselves still live in Key memory).
const SecretMemory = false

// SecretOff says why SecretMemory is false, for the warning at start.
const SecretOff = "encvol was built without GOEXPERIMENT=runtimesecret"

// Secretly calls f. Built with GOEXPERIMENT=runtimesecret (and without cgo)
// it erases f's temporaries as well; see secret_on.go.
func Secretly(f func()) { f() }
