//go:build goexperiment.runtimesecret && cgo

package keywrap

// SecretMemory is false in a build with cgo, even with
// GOEXPERIMENT=runtimesecret: Go 1.26's runtime crashes the process with
// SIGSEGV, without a traceback, when a cgo call happens inside
// runtime/secret.Do (asmcgocall erases the registers it still needs), and
// the runtime makes such a call whenever it starts a thread there. encvol
// links cgo through the net and os/user packages unless CGO_ENABLED=0, so
// such a build does without runtime/secret rather than crash now and then.
const SecretMemory = false

// SecretOff says why SecretMemory is false, for the warning at start.
const SecretOff = "encvol was built with cgo (CGO_ENABLED=1), where runtime/secret crashes the process now and then, so it is not used"

// Secretly calls f; see secret_on.go for what a build without cgo does.
func Secretly(f func()) { f() }
