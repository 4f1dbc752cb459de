//go:build !goexperiment.runtimesecret

package sector

// SecretMemory reports whether per-file key derivation runs under
// runtime/secret, so derived subkeys and AES key schedules are erased once
// unreachable.
const SecretMemory = false

func secretDo(f func()) { f() }
