#!/usr/bin/env bash
# The one test entry point (README's test command; .ci/run calls it).
# Installs what it needs on a fresh Debian machine, then runs formatting,
# vet, staticcheck, the whole Go test suite under the race detector (real
# FUSE mounts, real KMS round trips) and the interop tests with awscli and
# (where terraform is installed) Terraform's AWS provider.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }
need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
[ -x /usr/bin/aws ] || need_apt+=(awscli)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v useradd >/dev/null 2>&1 || need_apt+=(passwd)
command -v mkfs.xfs >/dev/null 2>&1 || need_apt+=(xfsprogs)
if [ ${#need_apt[@]} -gt 0 ]; then
	log "installing ${need_apt[*]}"
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v go >/dev/null 2>&1 || { echo "Go is not installed: install Go 1.26 or newer (https://go.dev/dl/) and rerun" >&2; exit 1; }

# FUSE is not optional: the mount tests must run, never skip.
if [ ! -c /dev/fuse ]; then
	echo "FAIL: /dev/fuse is missing; encvol's tests mount real FUSE file systems (load the fuse module or run the container with --device /dev/fuse)" >&2
	exit 1
fi

# Some tests read and abort FUSE connections through the FUSE control file
# system, which a machine without systemd does not mount by itself.
if ! mountpoint -q /sys/fs/fuse/connections 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
	mount -t fusectl none /sys/fs/fuse/connections
fi

# runtime/secret erases the stack and registers used while key material is
# handled; tests and binaries are built with it. It works only without cgo
# (keywrap/secret_cgo.go), so the encvol binary the tests run is built with
# CGO_ENABLED=0, while the race detector gives the test binaries cgo.
export GOEXPERIMENT=runtimesecret
export GOFLAGS=${GOFLAGS:-}

GOBIN_DIR=$(go env GOPATH)/bin
if ! [ -x "$GOBIN_DIR/staticcheck" ]; then
	log "installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1; fi

log "go vet"
go vet ./...

log "staticcheck"
"$GOBIN_DIR/staticcheck" ./...

log "go test -race"
go test -race -count=1 -timeout 20m ./...

log "awscli interop"
bash scripts/kms-awscli-test.sh

log "awscli interop: sharing over TLS"
bash scripts/kms-awscli-share-test.sh

log "terraform interop"
bash scripts/kms-terraform-test.sh

log "all tests passed"
