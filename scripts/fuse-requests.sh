#!/usr/bin/env bash
# fuse-requests.sh — count the FUSE requests the kernel sends to one mount while
# a command runs, by opcode, for any FUSE file system (encvol, securefs,
# gocryptfs, ...). `encvol status --ops` counts what encvol's daemon served;
# this counts what the kernel sent, so it compares file systems on equal terms.
#
# Usage (as root):
#   scripts/fuse-requests.sh MOUNTPOINT -- COMMAND [ARG...]
# Prints one line per opcode ("LOOKUP 628"), most frequent first, then
# "total N". COMMAND's own output goes to stderr. The exit status is COMMAND's,
# or 2 when counting is not possible (not root, no tracefs, a kernel without
# the fuse:fuse_request_send tracepoint, or MOUNTPOINT not a FUSE mount).
#
# How: a private tracefs instance (so the global trace buffer is untouched)
# records fuse:fuse_request_send filtered on the mount's connection (the
# kernel's device number of the FUSE superblock). Requests of other FUSE
# mounts are not counted, nor are FORGETs (the kernel queues those apart,
# without the tracepoint; `encvol status --ops` counts them).
# If the trace buffer overflowed the counts would be low: the script then
# fails rather than print them.
set -euo pipefail

die() { echo "fuse-requests: $*" >&2; exit 2; }

[ $# -ge 3 ] && [ "$2" = "--" ] || die "usage: $0 MOUNTPOINT -- COMMAND [ARG...]"
mnt=$1
shift 2
[ "$(id -u)" -eq 0 ] || die "needs root (tracefs)"
case "$(stat -f -c %T "$mnt" 2>/dev/null)" in
fuse* ) ;;
*) die "$mnt is not a FUSE mount" ;;
esac

tr=/sys/kernel/tracing
[ -d "$tr/instances" ] || tr=/sys/kernel/debug/tracing
if [ ! -d "$tr/instances" ]; then
	mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
	tr=/sys/kernel/tracing
fi
[ -d "$tr/instances" ] || die "tracefs is not available (mount -t tracefs nodev /sys/kernel/tracing)"
[ -d "$tr/events/fuse/fuse_request_send" ] ||
	die "this kernel has no fuse:fuse_request_send tracepoint (recent kernels have it; 6.18 does)"

# The kernel's dev_t of the superblock is major << 20 | minor; stat's %d is
# glibc's encoding of the same numbers.
ud=$(stat -c %d "$mnt")
major=$(( ((ud >> 8) & 0xfff) | ((ud >> 32) & ~0xfff) ))
minor=$(( (ud & 0xff) | ((ud >> 12) & ~0xff) ))
dev=$(( (major << 20) | minor ))

inst=$tr/instances/fuse-requests-$$
mkdir "$inst" || die "cannot create tracefs instance $inst"
out=$(mktemp)
cleanup() {
	echo 0 >"$inst/tracing_on" 2>/dev/null || true
	echo 0 >"$inst/events/fuse/fuse_request_send/enable" 2>/dev/null || true
	rmdir "$inst" 2>/dev/null || true
	rm -f "$out"
}
trap cleanup EXIT

echo 0 >"$inst/tracing_on"
echo 16384 >"$inst/buffer_size_kb"
echo "connection == $dev" >"$inst/events/fuse/fuse_request_send/filter"
echo 1 >"$inst/events/fuse/fuse_request_send/enable"
echo 1 >"$inst/tracing_on"
rc=0
"$@" >&2 || rc=$?
echo 0 >"$inst/tracing_on"

overrun=$(awk '/^overrun:/ {s += $2} END {print s + 0}' "$inst"/per_cpu/cpu*/stats)
[ "$overrun" -eq 0 ] || die "the trace buffer lost $overrun events; counts would be low"
cat "$inst/trace" >"$out"
grep -o '(FUSE_[A-Z0-9_]*)' "$out" | tr -d '()' | sed 's/^FUSE_//' |
	sort | uniq -c | sort -k1,1nr -k2 | awk '{print $2, $1; t += $1} END {print "total", t + 0}'
exit "$rc"
