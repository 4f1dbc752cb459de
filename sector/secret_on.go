//go:build goexperiment.runtimesecret

package sector

import "runtime/secret"

// SecretMemory reports whether per-file key derivation runs under
// runtime/secret, so derived subkeys and AES key schedules are erased once
// unreachable.
const SecretMemory = true

func secretDo(f func()) { secret.Do(f) }
