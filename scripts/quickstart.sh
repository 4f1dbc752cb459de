#!/usr/bin/env bash
# encvol in two minutes: builds encvol, creates a key in an embedded local
# KMS and a volume under ./demo, mounts it, writes and reads a file through
# it, and shows that the backing directory holds only ciphertext.
#
# Runs on a fresh Debian machine with Go installed (it installs fuse3 when
# fusermount3 is missing). Safe to run again: it unmounts a stale demo mount
# and reuses the demo volume.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# --- what the machine needs -------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v xxd >/dev/null 2>&1 || command -v od >/dev/null 2>&1 || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null 2>&1; then
	echo "Go is not installed (or not on PATH): install Go 1.26 or newer from https://go.dev/dl/ and run this again." >&2
	exit 1
fi
if [ ! -c /dev/fuse ]; then
	echo "/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container --device /dev/fuse." >&2
	exit 1
fi

# --- build ------------------------------------------------------------------
say "building encvol into ./bin"
# runtime/secret erases key temporaries; it needs a build without cgo
# (keywrap/secret_cgo.go says why).
export GOEXPERIMENT=runtimesecret CGO_ENABLED=0
mkdir -p bin
run go build -o bin/encvol ./cmd/encvol

DEMO=$ROOT/demo
CFG=$DEMO/encvol.toml
BACKING=$DEMO/backing
MNT=$DEMO/mnt
E=("$ROOT/bin/encvol" --config "$CFG")

# --- a second run: clean up what the first left mounted ----------------------
if mountpoint -q "$MNT" 2>/dev/null || grep -qs " $MNT fuse" /proc/self/mounts; then
	say "unmounting the demo volume left from an earlier run"
	"${E[@]}" umount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || $SUDO umount -l "$MNT" || true
fi

# --- configuration and key ----------------------------------------------------
mkdir -p "$DEMO" "$MNT"
cat >"$CFG" <<EOF
# Written by scripts/quickstart.sh. Every key: config.example.toml.
[kms.local]
type = "local"
path = "$DEMO/kms"

[defaults]
key_check_interval = "2s"

[volumes.demo]
backing = "$BACKING"
mountpoint = "$MNT"
key = "alias/demo"
EOF
say "configuration $CFG"
cat "$CFG"

say "a customer master key in the local KMS ($DEMO/kms)"
if "${E[@]}" kms describe-key alias/demo >/dev/null 2>&1; then
	echo "alias/demo exists from an earlier run; making sure it is enabled"
	"${E[@]}" kms enable-key alias/demo >/dev/null 2>&1 || true
else
	run "${E[@]}" kms create-key --alias alias/demo --description "encvol quickstart demo"
fi

# --- the volume -------------------------------------------------------------------
if [ -f "$BACKING/encvol.volume" ]; then
	say "reusing the demo volume in $BACKING"
else
	rm -rf "$BACKING"
	say "creating a volume in $BACKING"
	run "${E[@]}" create --backing "$BACKING" --key alias/demo
fi

say "mounting it on $MNT (encvol daemonizes and returns once the mount answers)"
run "${E[@]}" mount "$BACKING" "$MNT"

say "writing and reading a file through the mount"
SECRET="quickstart secret $(date +%s) - if you can grep this in the backing dir, something is wrong"
printf '%s\n' "$SECRET" >"$MNT/hello.txt"
mkdir -p "$MNT/documents"
head -c 65536 /dev/urandom >"$MNT/documents/random.bin"
run cat "$MNT/hello.txt"
run ls -la "$MNT" "$MNT/documents"

say "what is stored on disk: the backing directory"
run ls -la "$BACKING"
# hello.txt is the only file at the top of the volume.
first=$(find "$BACKING" -maxdepth 1 -type f ! -name 'encvol.*' -size +0 -print -quit)
if [ -n "$first" ]; then
	say "hello.txt as stored on disk ($first): a sector file header, then AES-256-GCM ciphertext"
	if command -v xxd >/dev/null 2>&1; then xxd -l 144 "$first"; else od -A x -t x1z -N 144 "$first"; fi
fi
say "searching the backing directory for the plaintext"
if grep -rqa -- "$SECRET" "$BACKING" || find "$BACKING" | grep -qE 'hello|documents|random'; then
	echo "FOUND plaintext content or names in $BACKING: this should never happen" >&2
	exit 1
fi
echo "grep found neither the file content nor the names hello.txt/documents/random.bin: only ciphertext is stored."

say "status of the running mount"
run "${E[@]}" status

cat <<EOF

Done. The demo volume stays mounted on $MNT.

  unmount:          ${E[*]} umount $MNT
  mount again:      ${E[*]} mount demo
  try the kill switch (the mount refuses I/O within key_check_interval = 2s):
                    ${E[*]} kms disable-key alias/demo; cat $MNT/hello.txt
                    ${E[*]} kms enable-key alias/demo;  cat $MNT/hello.txt
  start over:       ${E[*]} umount $MNT; rm -rf $DEMO

For mount(8) and fstab (type fuse.encvol), install the binary and the helper:
  install -m 755 bin/encvol /usr/local/bin/encvol
  install -m 755 scripts/mount.fuse.encvol /sbin/mount.fuse.encvol
  mount -t fuse.encvol $BACKING $MNT -o config=$CFG
EOF
