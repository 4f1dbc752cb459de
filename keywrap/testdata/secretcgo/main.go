// Command secretcgo makes one cgo call inside runtime/secret.Do (os.Setenv
// calls setenv(3) through cgo when cgo is linked in). keywrap's
// TestRuntimeSecretCgoCall builds it with cgo and GOEXPERIMENT=runtimesecret
// to see whether Go still kills it with SIGSEGV.
package main

import "C"

import (
	"os"
	"runtime/secret"
)

func main() {
	secret.Do(func() { os.Setenv("ENCVOL_SECRET_CGO_PROBE", "1") })
	os.Stdout.WriteString("survived\n")
}
