//go:build !goexperiment.runtimesecret || cgo

package sector

// SecretMemory reports whether per-file key derivation runs under
// runtime/secret, so derived subkeys and AES key schedules are erased once
// unreachable (not in a build with cgo: see keywrap/secret_cgo.go).
const SecretMemory = false

func secretDo(f func()) { f() }
