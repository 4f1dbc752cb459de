#!/usr/bin/env bash
# bench.sh — encvol side by side with securefs, gocryptfs, a FUSE loopback
# without kernel passthrough, and the bare directory, all on the same tmpfs.
#
# Usage (as root, from anywhere in the repository):
#   scripts/bench.sh                 full run, medians of RUNS (default 3) runs,
#                                    table appended to docs/performance.md
#   QUICK=1 scripts/bench.sh         smoke run with small sizes, 1 run, table
#                                    printed only (set APPEND=1 to append anyway)
# Environment:
#   RUNS=N            runs per workload (median reported), default 3 (QUICK: 1)
#   SYSTEMS="..."     subset of: encvol securefs gocryptfs loopback bare
#                     (default: all)
#   TMPFS_SIZE=3G     size of the tmpfs that holds every backing directory
#   APPEND=0|1        append the table to docs/performance.md (default 1; QUICK: 0)
#   KEEP=1            keep the work directory (logs) after the run
#   ENCVOL_OPTS=...   mount options for encvol's mounts (encvol mount -o), e.g.
#                     noxattr; default none
#   PARTS="..."       subset of: fs (the file system comparison), fsck (encvol
#                     fsck of a FSCK_MB volume against raw AES-GCM on every
#                     core), snapshot (snapshot of a volume while fio writes
#                     to it, once on the tmpfs (copy) and once on a
#                     loop-mounted XFS with reflink=1 (reflink) when mkfs.xfs
#                     and a loop device work), lifecycle (encvol import and
#                     copy of a ~1 GiB tree of many small and some large files
#                     against cp -a of the same tree into a mounted encvol
#                     volume); default: all
#   REQUESTS=0|1      after the timed fs runs, count the FUSE requests the
#                     kernel sends to each system per workload, on a small
#                     tree (net and encoding of the Go sources), with
#                     scripts/fuse-requests.sh (untimed; default 1)
#   FSCK_MB=N         size of the fsck volume in MiB, default 1024 (QUICK: 128)
#   SNAP_MB=N         size of the snapshot volume in MiB (default 1024; QUICK: 128)
#   LC_TMPFS_SIZE=5G  size of the tmpfs of the lifecycle part
#
# Why each system: securefs and gocryptfs are the established encrypted FUSE
# file systems (securefs mounts with 30 s attribute and entry timeouts and
# without default_permissions, so it is the bar on metadata work);
# the no-passthrough loopback (scripts/nopassthrough) is the fastest any FUSE
# file system can be when the daemon has to see every byte; bare tmpfs is the
# floor. "Cold" means: unmount, mount again, drop the page cache. On a tmpfs
# backing that drops only the FUSE mount's cached pages: tmpfs is the storage.
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (mounts tmpfs, drops caches, direct FUSE mounts)"
command -v go >/dev/null || die "go not found in PATH"

REPO=$(cd "$(dirname "$0")/.." && pwd)
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1}
	APPEND=${APPEND:-0}
	SEQ_MB=64          # sequential write/read size in MiB
	SMALL_COUNT=4096   # 512-byte writes (2 MiB)
	FIO_SECS=2
	FIO_SIZE=32M
	LC_SMALL=2000      # lifecycle tree: small files of 1..64 KiB (~64 MiB)
	LC_LARGE=2         # and large files of LC_LARGE_MB MiB each
	LC_LARGE_MB=32
else
	RUNS=${RUNS:-3}
	APPEND=${APPEND:-1}
	SEQ_MB=1024
	SMALL_COUNT=65536  # 32 MiB
	FIO_SECS=10
	FIO_SIZE=256M
	LC_SMALL=16000     # ~512 MiB in small files
	LC_LARGE=8         # 512 MiB in large ones
	LC_LARGE_MB=64
fi
SYSTEMS=${SYSTEMS:-"encvol securefs gocryptfs loopback bare"}
PARTS=${PARTS:-"fs fsck snapshot lifecycle"}
if [ "$QUICK" = 1 ]; then FSCK_MB=${FSCK_MB:-128}; else FSCK_MB=${FSCK_MB:-1024}; fi
if [ "$QUICK" = 1 ]; then SNAP_MB=${SNAP_MB:-128}; else SNAP_MB=${SNAP_MB:-1024}; fi
TMPFS_SIZE=${TMPFS_SIZE:-3G}
KEEP=${KEEP:-0}
LC_TMPFS_SIZE=${LC_TMPFS_SIZE:-5G}
CMDLINE="$(printf '%q ' "$0" "$@")"
ENVLINE="QUICK=$QUICK RUNS=$RUNS SYSTEMS=\"$SYSTEMS\" PARTS=\"$PARTS\" TMPFS_SIZE=$TMPFS_SIZE FSCK_MB=$FSCK_MB SNAP_MB=$SNAP_MB LC_TMPFS_SIZE=$LC_TMPFS_SIZE${ENCVOL_OPTS:+ ENCVOL_OPTS=$ENCVOL_OPTS}"

for s in $SYSTEMS; do
	case $s in encvol | securefs | gocryptfs | loopback | bare) ;; *) die "unknown system '$s' in SYSTEMS" ;; esac
done

has() { case " $SYSTEMS " in *" $1 "*) return 0 ;; esac; return 1; }
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
for p in $PARTS; do
	case $p in fs | fsck | lifecycle) ;; *) die "unknown part '$p' in PARTS" ;; esac
done
part fs || SYSTEMS=""

# --- tools -------------------------------------------------------------------
need_pkgs=()
command -v fio >/dev/null || need_pkgs+=(fio)
command -v jq >/dev/null || need_pkgs+=(jq)
command -v mountpoint >/dev/null || need_pkgs+=(util-linux)
if part lifecycle; then
	[ -x /usr/bin/time ] || need_pkgs+=(time)
	command -v python3 >/dev/null || need_pkgs+=(python3)
fi
if has gocryptfs; then
	command -v gocryptfs >/dev/null || need_pkgs+=(gocryptfs)
	# Debian's gocryptfs depends only on libfuse2 and mounts through
	# fusermount, which the fuse3 package provides (a link to fusermount3).
	command -v fusermount >/dev/null || need_pkgs+=(fuse3)
fi
if has securefs; then
	command -v securefs >/dev/null || need_pkgs+=(securefs)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- work area and cleanup ----------------------------------------------------
WORK=$(mktemp -d /tmp/encvol-bench.XXXXXX)
T=$WORK/tmpfs      # every backing directory and the bare directory live here
declare -A PID=()  # daemon pid per FUSE system

mp() { echo "$WORK/mnt/$1"; }
backing() { echo "$T/$1"; }

SNAP_FIO=""
cleanup() {
	set +e
	[ -z "$SNAP_FIO" ] || { kill "$SNAP_FIO" 2>/dev/null; wait "$SNAP_FIO" 2>/dev/null; }
	for s in "${!PID[@]}"; do stop_fs "$s" 2>/dev/null; done
	for m in "$WORK"/mnt/*; do
		mountpoint -q "$m" 2>/dev/null && umount -l "$m"
	done
	mountpoint -q "$T" && umount -l "$T"
	mountpoint -q "$WORK/lc" && umount -l "$WORK/lc"
	for d in "$WORK"/fsck-*; do
		mountpoint -q "$d" 2>/dev/null && umount -l "$d"
	done
	mountpoint -q "$WORK/xfs" 2>/dev/null && umount -l "$WORK/xfs"
	if [ "$KEEP" = 1 ]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T" "$WORK/mnt" "$WORK/bin" "$WORK/res" "$WORK/log"
mount -t tmpfs -o size="$TMPFS_SIZE" encvol-bench "$T"

# --- build ---------------------------------------------------------------------
# As released: runtime/secret, which needs a build without cgo.
export GOEXPERIMENT=runtimesecret CGO_ENABLED=0
(cd "$REPO" && go build -o "$WORK/bin/nopassthrough" ./scripts/nopassthrough)
if has encvol || part fsck || part snapshot || part lifecycle; then
	(cd "$REPO" && go build -o "$WORK/bin/encvol" ./cmd/encvol)
	CFG=$WORK/encvol.toml
	cat >"$CFG" <<EOF
[kms.local]
type = "local"
path = "$WORK/kms"
EOF
	ENCVOL=("$WORK/bin/encvol" --config "$CFG")
	"${ENCVOL[@]}" kms create-key --alias alias/bench --description "encvol benchmark" >"$WORK/log/create-key.out"
	if part lifecycle; then
		"${ENCVOL[@]}" kms create-key --alias alias/bench-copy --description "encvol benchmark, copies" >>"$WORK/log/create-key.out"
	fi
fi
if has encvol; then
	mkdir -p "$(backing encvol)"
	"${ENCVOL[@]}" create --backing "$(backing encvol)" --key alias/bench >"$WORK/log/create.out"
fi
case " $SYSTEMS " in *" gocryptfs "*)
	mkdir -p "$(backing gocryptfs)"
	gocryptfs -q -init -extpass 'echo pw' "$(backing gocryptfs)" >/dev/null
	;;
esac
case " $SYSTEMS " in *" securefs "*)
	mkdir -p "$(backing securefs)"
	securefs create --pass pw "$(backing securefs)" >/dev/null
	;;
esac
mkdir -p "$(backing loopback)" "$(backing bare)"

if part fsck; then
	(cd "$REPO" && go test -c -o "$WORK/bin/sector.test" ./sector)
fi

# The Go source tree, tarred once onto the tmpfs but outside every measured
# directory, so reading the archive never touches a disk.
TAR=$T/gosrc.tar
TAR_FILES=0
if part fs; then
	GOSRC=$(go env GOROOT)/src
	if [ "$QUICK" = 1 ]; then
		tar -cf "$TAR" -C "$GOSRC" net encoding
	else
		tar -cf "$TAR" -C "$GOSRC" .
	fi
	TAR_FILES=$(tar -tf "$TAR" | grep -vc '/$')
fi

# --- mount handling -------------------------------------------------------------
wait_mounted() { # MOUNTPOINT PID LOGFILE
	local deadline=$((SECONDS + 30))
	until mountpoint -q "$1"; do
		kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "daemon for $1 exited before mounting"; }
		[ $SECONDS -lt $deadline ] || { cat "$3" >&2; die "timeout waiting for mount $1"; }
		sleep 0.05
	done
}

start_fs() { # SYSTEM
	local s=$1 m lf
	m=$(mp "$s")
	lf=$WORK/log/$s.log
	mkdir -p "$m"
	case $s in
	bare) return 0 ;;
	encvol) "${ENCVOL[@]}" mount -f ${ENCVOL_OPTS:+-o "$ENCVOL_OPTS"} "$(backing encvol)" "$m" >>"$lf" 2>&1 & ;;
	gocryptfs) gocryptfs -fg -q -nosyslog -extpass 'echo pw' "$(backing gocryptfs)" "$m" >>"$lf" 2>&1 & ;;
	securefs) securefs mount --pass pw "$(backing securefs)" "$m" >>"$lf" 2>&1 & ;;
	loopback) "$WORK/bin/nopassthrough" "$(backing loopback)" "$m" >>"$lf" 2>&1 & ;;
	esac
	PID[$s]=$!
	wait_mounted "$m" "${PID[$s]}" "$lf"
}

stop_fs() { # SYSTEM — SIGTERM is a clean unmount for every daemon
	local s=$1 m p deadline
	[ "$s" = bare ] && return 0
	m=$(mp "$s")
	p=${PID[$s]:-}
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || true
	deadline=$((SECONDS + 30))
	while mountpoint -q "$m" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
	if mountpoint -q "$m"; then
		log "$s did not unmount on SIGTERM; lazy unmount"
		umount -l "$m" || true
	fi
	wait "$p" 2>/dev/null || true
	unset "PID[$s]"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

cold() { # SYSTEM: remount and drop the page cache
	stop_fs "$1"
	drop_caches
	start_fs "$1"
}

# --- measurement helpers ----------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
record() { echo "$3" >>"$WORK/res/$1.$2"; } # SYSTEM WORKLOAD VALUE
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }

timed() { # SYSTEM WORKLOAD CMD... — records seconds (and encvol's requests)
	local s=$1 w=$2 t0
	shift 2
	ops_begin "$s"
	t0=$(now)
	"$@"
	record "$s" "$w" "$(elapsed "$t0")"
	ops_end "$s" "$w"
}

# encvol counts the FUSE requests it serves by opcode (encvol status --ops);
# the difference across a workload is what that workload cost in round
# trips. The last run's counts are reported.
ops_begin() { # SYSTEM
	[ "$1" = encvol ] || return 0
	"${ENCVOL[@]}" status --ops --json "$(mp encvol)" >"$WORK/ops.before"
}
ops_end() { # SYSTEM WORKLOAD
	[ "$1" = encvol ] || return 0
	"${ENCVOL[@]}" status --ops --json "$(mp encvol)" >"$WORK/ops.after"
	jq -r -s '.[0] as $a | .[1] | to_entries | map(.value - ($a[.key] // 0) | select(. > 0)) | add // 0' \
		"$WORK/ops.before" "$WORK/ops.after" >"$WORK/res/encvol.ops_total.$2"
	jq -r -s '.[0] as $a | .[1] | to_entries | map({k: .key, v: (.value - ($a[.key] // 0))} | select(.v > 0))
		| sort_by(-.v) | map("\(.k) \(.v)") | join(", ")' \
		"$WORK/ops.before" "$WORK/ops.after" >"$WORK/res/encvol.ops.$2"
}

timed_mbps() { # SYSTEM WORKLOAD BYTES CMD... — records MB/s (10^6 bytes)
	local s=$1 w=$2 bytes=$3 t0 secs
	shift 3
	ops_begin "$s"
	t0=$(now)
	"$@"
	secs=$(elapsed "$t0")
	record "$s" "$w" "$(mbps "$bytes" "$secs")"
	ops_end "$s" "$w"
}

fio_mbps() { # SYSTEM WORKLOAD RW DIR
	local s=$1 w=$2 rw=$3 dir=$4 out key
	out=$WORK/log/fio.$s.$w.json
	ops_begin "$s"
	fio --name="$w" --directory="$dir" --filename=fio.dat --rw="$rw" --bs=4k \
		--ioengine=psync --direct=0 --size="$FIO_SIZE" --runtime="$FIO_SECS" --time_based \
		--output-format=json --output="$out" >/dev/null
	case $rw in randread) key=read ;; *) key=write ;; esac
	record "$s" "$w" "$(jq -r ".jobs[0].$key.bw_bytes / 1e6 * 10 | floor / 10" "$out")"
	ops_end "$s" "$w" # includes fio's untimed layout of the file
}

peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# --- one run of every workload on one system ---------------------------------------------
run_system() {
	local s=$1 m
	m=$(mp "$s")
	start_fs "$s"

	timed_mbps "$s" seqwrite $((SEQ_MB << 20)) \
		dd if=/dev/zero of="$m/big" bs=1M count="$SEQ_MB" conv=fsync status=none
	cold "$s"
	timed_mbps "$s" seqread $((SEQ_MB << 20)) dd if="$m/big" of=/dev/null bs=1M status=none
	rm -f "$m/big"

	timed_mbps "$s" smallwrite $((SMALL_COUNT * 512)) \
		dd if=/dev/zero of="$m/small" bs=512 count="$SMALL_COUNT" conv=fsync status=none
	rm -f "$m/small"

	# randwrite lays the file out first (not timed by fio); randread then starts
	# from a remounted, cold mount on that same file.
	fio_mbps "$s" randwrite randwrite "$m"
	cold "$s"
	fio_mbps "$s" randread randread "$m"
	rm -f "$m/fio.dat"

	# A fresh daemon before the untar, so the encvol daemon's VmHWM is the peak
	# of mount + untar alone.
	cold "$s"
	mkdir "$m/untar"
	timed "$s" untar tar -xf "$TAR" -C "$m/untar"
	if [ "$s" = encvol ]; then
		record encvol rss_kib "$(peak_rss_kib "${PID[encvol]}")"
	fi
	cold "$s"
	timed "$s" lsR sh -c "ls -lR '$m/untar' >/dev/null"
	# The same again on the warm mount: what the kernel's entry and
	# attribute caches save (their timeouts, cache_timeout=).
	timed "$s" lsRwarm sh -c "ls -lR '$m/untar' >/dev/null"
	cold "$s"
	timed "$s" readall sh -c "find '$m/untar' -type f -exec cat {} + >/dev/null"
	local n
	n=$(find "$m/untar" -type f | wc -l)
	[ "$n" = "$TAR_FILES" ] || die "$s: $n files after untar, want $TAR_FILES"
	timed "$s" rm rm -rf "$m/untar"

	stop_fs "$s"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# CPU time the hypervisor gave to other guests while this guest wanted it
# (the "steal" column of /proc/stat, in clock ticks): on a shared host it
# says more about a run's noise than the load average does.
steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }
STEAL_START=$(steal_ticks)
RUN_START=$(date +%s)
log "work directory $WORK; sizes: seq ${SEQ_MB} MiB, small $SMALL_COUNT x 512 B, fio ${FIO_SECS}s/${FIO_SIZE}, tar $TAR_FILES files"
# Each run starts with the next system: whoever runs first after a full
# rm -rf pays for memory the host took back (see docs/performance.md), and
# a fixed order would charge that to one system every time.
read -ra SYS_ORDER <<<"$SYSTEMS"
if part fs; then
	for ((r = 1; r <= RUNS; r++)); do
		for ((i = 0; i < ${#SYS_ORDER[@]}; i++)); do
			s=${SYS_ORDER[$(((i + r - 1) % ${#SYS_ORDER[@]}))]}
			log "run $r/$RUNS: $s"
			run_system "$s"
		done
	done
fi

# --- requests: what each workload costs each system in round trips -----------------
# Untimed (tracing perturbs the timings), on a small tree, after the timed
# runs: the kernel's own count of the requests it sends to each mount, so the
# metadata rows of every system are explained by their round trips.
REQ_TABLE=$WORK/requests.md
REQ_WORKLOADS="untar lsR lsRwarm readall rm"
REQ_NOTE=""
req_count() { # SYSTEM WORKLOAD CMD...
	local s=$1 w=$2 out rc=0
	shift 2
	out=$("$REPO/scripts/fuse-requests.sh" "$(mp "$s")" -- "$@" 2>"$WORK/log/requests.err") || rc=$?
	if [ "$rc" = 2 ]; then
		REQ_NOTE=$(tail -1 "$WORK/log/requests.err")
		return 1
	fi
	[ "$rc" = 0 ] || die "$s: $w failed while counting requests (exit $rc)"
	awk '$1 == "total" { t = $2; next } { s = s (s ? ", " : "") $1 " " $2 } END { print t ": " s }' <<<"$out" >"$WORK/res/$s.req.$w"
}
req_system() { # SYSTEM
	local s=$1 m
	m=$(mp "$s")
	start_fs "$s"
	mkdir "$m/req"
	req_count "$s" untar tar -xf "$REQ_TAR" -C "$m/req" || { stop_fs "$s"; return 1; }
	cold "$s"
	req_count "$s" lsR sh -c "ls -lR '$m/req' >/dev/null"
	req_count "$s" lsRwarm sh -c "ls -lR '$m/req' >/dev/null"
	req_count "$s" readall sh -c "find '$m/req' -type f -exec cat {} + >/dev/null"
	req_count "$s" rm rm -rf "$m/req"
	stop_fs "$s"
}
if part fs && [ "${REQUESTS:-1}" = 1 ]; then
	REQ_TAR=$T/reqtree.tar
	tar -cf "$REQ_TAR" -C "$(go env GOROOT)/src" net encoding
	REQ_FILES=$(tar -tf "$REQ_TAR" | grep -vc '/$')
	for s in $SYSTEMS; do
		[ "$s" = bare ] && continue
		log "requests: $s"
		req_system "$s" || break
	done
	{
		if [ -n "$REQ_NOTE" ]; then
			echo "No request counts per system in this run: $REQ_NOTE."
		else
			echo "FUSE requests the kernel sent per workload (untimed pass on net and encoding of the Go sources, $REQ_FILES files; \`scripts/fuse-requests.sh\`):"
			echo
			printf '| workload |'; for s in $SYSTEMS; do [ "$s" = bare ] || printf ' %s |' "$s"; done; echo
			printf '|---|'; for s in $SYSTEMS; do [ "$s" = bare ] || printf -- '---|'; done; echo
			for w in $REQ_WORKLOADS; do
				printf '| %s |' "$w"
				for s in $SYSTEMS; do [ "$s" = bare ] || printf ' %s |' "$(cat "$WORK/res/$s.req.$w" 2>/dev/null || echo -)"; done
				echo
			done
		fi
	} >"$REQ_TABLE"
fi

# --- lifecycle: import and copy against cp -a into a mounted volume ----------------------
# The tree and all three volumes share a tmpfs of their own. cp -a is timed
# until `encvol umount` returns, which writes back what the kernel still
# held; import and copy are timed to their end, which includes their check
# (every file read back and compared, one mount). CPU is user + system time
# of every process involved, as cores kept busy on average.
LC=$WORK/lc
lc_tree() { # DIR
	python3 - "$1" "$LC_SMALL" "$LC_LARGE" "$LC_LARGE_MB" <<'PY'
import os, random, sys
root, small, large, large_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(1)
for i in range(small):
    d = os.path.join(root, "d%03d" % (i % 100), "e%d" % (i % 7))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(rnd.randint(1, 64 << 10)))
os.makedirs(os.path.join(root, "large"), exist_ok=True)
for i in range(large):
    with open(os.path.join(root, "large", "big%d" % i), "wb") as f:
        for _ in range(large_mb):
            f.write(os.urandom(1 << 20))
PY
}
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; } # PID
timed_cmd() { # NAME CMD... — records seconds, cores busy and peak RSS (KiB) of one process
	local n=$1 out=$WORK/log/lc-time.$1
	shift
	/usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >>"$WORK/log/lc-$n.log" 2>&1
	read -r secs usr sys rss <"$out"
	record lc "$n.secs" "$secs"
	record lc "$n.cores" "$(awk -v u="$usr" -v s="$sys" -v e="$secs" 'BEGIN { printf "%.2f", (u + s) / e }')"
	record lc "$n.rss" "$rss"
}
lc_run() { # RUN — a new backing path each run: the first mount of a path pins its volume
	local b=$LC/cpa-$1 m=$WORK/mnt/lc pid t0 secs cpu lf=$WORK/log/lc-mount.log
	"${ENCVOL[@]}" create --backing "$b" --key alias/bench >/dev/null
	mkdir -p "$m"
	"${ENCVOL[@]}" mount -f "$b" "$m" >>"$lf" 2>&1 &
	pid=$!
	wait_mounted "$m" "$pid" "$lf"
	t0=$(now)
	/usr/bin/time -f '%U %S' -o "$WORK/log/lc-time.cp" cp -a "$LC/plain/." "$m/"
	cpu=$(cpu_secs "$pid")
	record lc cpa.rss "$(peak_rss_kib "$pid")"
	"${ENCVOL[@]}" umount "$m" >/dev/null
	wait "$pid" 2>/dev/null || true
	secs=$(elapsed "$t0")
	record lc cpa.secs "$secs"
	record lc cpa.cores "$(awk -v d="$cpu" -v e="$secs" '{ printf "%.2f", ($1 + $2 + d) / e }' "$WORK/log/lc-time.cp")"
	rm -rf "$b"

	timed_cmd import "${ENCVOL[@]}" import "$LC/plain" --backing "$LC/imp" --key alias/bench
	timed_cmd copy "${ENCVOL[@]}" copy "$LC/imp" --backing "$LC/cpy" --key alias/bench-copy
	rm -rf "$LC/imp" "$LC/cpy"
}
if part lifecycle; then
	mkdir -p "$LC"
	mount -t tmpfs -o size="$LC_TMPFS_SIZE" encvol-bench-lc "$LC"
	log "lifecycle: writing the tree ($LC_SMALL small files, $LC_LARGE x $LC_LARGE_MB MiB)"
	lc_tree "$LC/plain"
	LC_FILES=$(find "$LC/plain" -type f | wc -l)
	LC_BYTES=$(find "$LC/plain" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
	for ((r = 1; r <= RUNS; r++)); do
		log "run $r/$RUNS: lifecycle"
		lc_run "$r"
	done
fi

# --- fsck ----------------------------------------------------------------------------------
# encvol fsck reads every stored sector of a FSCK_MB volume and authenticates
# it, one worker per core. The reference is bare AES-GCM opening 4 KiB
# sectors on every core (sector's BenchmarkRawGCMOpen4KParallel, one sector
# over and over, so out of the CPU cache: the ceiling of any checker), run
# right before and right after each fsck so that both see the same load. The
# volume lies on a plain tmpfs (4 KiB pages), on a tmpfs with huge pages and
# on a loop-mounted XFS (whose page cache holds large folios, as ext4's does
# on current kernels): fsck reads the files out of the page cache, a copy
# that costs less from large pages than from 4 KiB ones.
raw_gcm() {
	"$WORK/bin/sector.test" -test.run '^$' -test.bench 'RawGCMOpen4KParallel$' -test.benchtime 1s -test.cpu "$(nproc)" |
		awk '/MB\/s/ { for (i = 2; i <= NF; i++) if ($i == "MB/s") print $(i - 1) }'
}

fsck_bench() { # KIND: plain | huge | xfs
	local kind=$1 dir=$WORK/fsck-$1 m=$WORK/mnt/fsck opts="size=$((FSCK_MB * 2 + 64))M" r raw1 raw2 fs i
	[ "$kind" = huge ] && opts="$opts,huge=always"
	mkdir -p "$dir" "$m"
	if [ "$kind" = xfs ]; then
		# The image lies on the tmpfs under test, so the XFS has no disk
		# underneath either.
		truncate -s $((FSCK_MB * 2 + 512))M "$T/fsck-xfs.img"
		mkfs.xfs -q "$T/fsck-xfs.img" >/dev/null || die "mkfs.xfs of the fsck image failed"
		mount -o loop "$T/fsck-xfs.img" "$dir" || die "no loop device could mount the fsck XFS image"
	else
		mount -t tmpfs -o "$opts" encvol-fsck "$dir"
	fi
	"${ENCVOL[@]}" create --backing "$dir/vol" --key alias/bench >"$WORK/log/fsck-create.$kind.out"
	"${ENCVOL[@]}" mount "$dir/vol" "$m" >>"$WORK/log/fsck-mount.$kind.out"
	for i in $(seq 1 16); do
		dd if=/dev/zero of="$m/f$i" bs=1M count=$((FSCK_MB / 16)) status=none
	done
	"${ENCVOL[@]}" umount "$m" >>"$WORK/log/fsck-mount.$kind.out"
	for ((r = 1; r <= RUNS; r++)); do
		log "fsck run $r/$RUNS on $kind"
		raw1=$(raw_gcm)
		"${ENCVOL[@]}" fsck "$dir/vol" --json >"$WORK/log/fsck.$kind.$r.json" 2>"$WORK/log/fsck.$kind.$r.err" ||
			die "fsck of the benchmark volume exited $? (see $WORK/log/fsck.$kind.$r.err)"
		raw2=$(raw_gcm)
		fs=$(jq -r '.throughput_bytes_per_s / 1e6 * 10 | floor / 10' "$WORK/log/fsck.$kind.$r.json")
		record fsck "$kind" "$fs"
		record raw "$kind" "$(awk -v a="$raw1" -v b="$raw2" 'BEGIN { printf "%.1f", (a + b) / 2 }')"
		record fsckratio "$kind" "$(awk -v f="$fs" -v a="$raw1" -v b="$raw2" 'BEGIN { printf "%.2f", 2 * f / (a + b) }')"
	done
	umount "$dir"
	rm -f "$T/fsck-xfs.img"
}

if part fsck; then
	fsck_bench plain
	fsck_bench huge
	command -v mkfs.xfs >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null 2>&1 || true
	command -v mkfs.xfs >/dev/null || die "mkfs.xfs is not installed and apt-get could not install xfsprogs"
	fsck_bench xfs
fi

# --- snapshot while a writer runs ------------------------------------------------------------
# A volume of SNAP_MB MiB (16 files) on the file system under test is
# mounted, a writer runs in it, and `encvol snapshot create --json` runs
# RUNS times; paused_ms is how long the mount's writes waited, the snapshot
# time is the whole command. Each snapshot is deleted before the next, so
# every run copies everything again. Two writers (fio, psync, through the
# writeback cache): "random" rewrites 4 KiB blocks of a 256 MiB file as fast
# as it can, the worst case for the last pass (the file changes all over
# while the first pass runs); "append" writes 1 MiB blocks sequentially at
# 20 MB/s (around a 256 MiB file), like a log or a recorder.
SNAP_TABLE=$WORK/snapshot.md
XFS_NOTE=""
declare -A WRITER=(
	[random]="--rw=randwrite --bs=4k --size=256M"
	[append]="--rw=write --bs=1M --size=256M --rate=20m"
)
snapshot_bench() { # FSLABEL DIR
	local fsl=$1 dir=$2 b m fpid i out w
	b=$dir/snapvol
	m=$WORK/mnt/snap
	mkdir -p "$m"
	"${ENCVOL[@]}" create --backing "$b" --key alias/bench >/dev/null
	"${ENCVOL[@]}" mount "$b" "$m" >/dev/null
	for ((i = 0; i < 16; i++)); do
		dd if=/dev/urandom of="$m/data$i" bs=1M count=$((SNAP_MB / 16)) status=none
	done
	sync
	for w in random append; do
		# shellcheck disable=SC2086 # WRITER holds several options
		fio --name=snapwriter --directory="$m" --filename="writer-$w.dat" ${WRITER[$w]} \
			--ioengine=psync --time_based --runtime=3600 --output=/dev/null >/dev/null 2>&1 &
		fpid=$!
		SNAP_FIO=$fpid
		sleep 3 # let fio lay out its file and reach its pace
		for ((i = 1; i <= RUNS; i++)); do
			out=$WORK/log/snapshot.$fsl.$w.$i.json
			"${ENCVOL[@]}" snapshot create "$b" --name "bench$i" --json >"$out"
			record "$fsl-$w" snap_paused "$(jq -r .paused_ms "$out")"
			record "$fsl-$w" snap_secs "$(jq -r '.duration_ms / 1000 * 100 | floor / 100' "$out")"
			jq -r .method "$out" >"$WORK/res/$fsl-$w.snap_method"
			"${ENCVOL[@]}" snapshot delete "$b" "bench$i" >/dev/null
		done
		kill "$fpid" 2>/dev/null
		wait "$fpid" 2>/dev/null || true
		rm -f "$m/writer-$w.dat"
	done
	"${ENCVOL[@]}" umount "$m" >/dev/null
	rm -rf "$b" "$b.snapshots"
}
xfs_mount() { # sets XFS to the mountpoint of a loop XFS with reflinks, or XFS_NOTE to why not
	command -v mkfs.xfs >/dev/null || {
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null 2>&1 || true
	}
	command -v mkfs.xfs >/dev/null || { XFS_NOTE="mkfs.xfs is not installed and apt-get could not install xfsprogs"; return 1; }
	local img=$WORK/xfs.img
	XFS=$WORK/xfs
	truncate -s $((SNAP_MB * 3 + 1024))M "$img"
	mkfs.xfs -q -m reflink=1 "$img" >/dev/null 2>&1 || { XFS_NOTE="mkfs.xfs -m reflink=1 failed"; return 1; }
	mkdir -p "$XFS"
	mount -o loop "$img" "$XFS" 2>/dev/null || { XFS_NOTE="no loop device could mount the XFS image"; return 1; }
}
if part snapshot; then
	log "snapshot of a ${SNAP_MB} MiB volume while fio writes: tmpfs (copy)"
	snapshot_bench tmpfs "$T"
	if xfs_mount; then
		log "snapshot of a ${SNAP_MB} MiB volume while fio writes: XFS with reflink=1"
		snapshot_bench xfs "$XFS"
		umount "$XFS"
	else
		log "no reflink row: $XFS_NOTE"
	fi
fi

# --- report ------------------------------------------------------------------------------
median() { # FILE
	[ -s "$1" ] || { echo "-"; return; }
	sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { # A B HIGHER_IS_BETTER(1|0) — speed of encvol relative to the other system
	awk -v a="$1" -v b="$2" -v hib="$3" 'BEGIN {
		if (a == "-" || b == "-" || a + 0 == 0 || b + 0 == 0) { print "-"; exit }
		printf "%.2f", hib ? a / b : b / a }'
}

WORKLOADS="seqwrite seqread smallwrite randread randwrite untar lsR lsRwarm readall rm"
declare -A LABEL=(
	[seqwrite]="sequential write ${SEQ_MB} MiB, dd bs=1M conv=fsync (MB/s)"
	[seqread]="sequential read ${SEQ_MB} MiB, cold (MB/s)"
	[smallwrite]="write $((SMALL_COUNT * 512 >> 20)) MiB in 512 B writes, conv=fsync (MB/s)"
	[randread]="fio 4 KiB randread, psync, ${FIO_SECS} s, cold (MB/s)"
	[randwrite]="fio 4 KiB randwrite, psync, ${FIO_SECS} s (MB/s)"
	[untar]="untar Go src, $TAR_FILES files (s)"
	[lsR]="ls -lR, cold (s)"
	[lsRwarm]="ls -lR again, warm (s)"
	[readall]="read all files, cold (s)"
	[rm]="rm -rf (s)"
)
declare -A HIB=([seqwrite]=1 [seqread]=1 [smallwrite]=1 [randread]=1 [randwrite]=1 [untar]=0 [lsR]=0 [lsRwarm]=0 [readall]=0 [rm]=0)

TABLE=$WORK/table.md
: >"$TABLE"
part fs && {
	printf '| workload |'
	for s in $SYSTEMS; do printf ' %s |' "$s"; done
	has encvol && has securefs && printf ' encvol/securefs |'
	has encvol && has gocryptfs && printf ' encvol/gocryptfs |'
	has encvol && has loopback && printf ' encvol/loopback |'
	echo
	printf '|---|'
	for s in $SYSTEMS; do printf -- '---:|'; done
	has encvol && has securefs && printf -- '---:|'
	has encvol && has gocryptfs && printf -- '---:|'
	has encvol && has loopback && printf -- '---:|'
	echo
	for w in $WORKLOADS; do
		printf '| %s |' "${LABEL[$w]}"
		declare -A med=()
		for s in $SYSTEMS; do
			med[$s]=$(median "$WORK/res/$s.$w")
			printf ' %s |' "${med[$s]}"
		done
		has encvol && has securefs && printf ' %s |' "$(ratio "${med[encvol]}" "${med[securefs]}" "${HIB[$w]}")"
		has encvol && has gocryptfs && printf ' %s |' "$(ratio "${med[encvol]}" "${med[gocryptfs]}" "${HIB[$w]}")"
		has encvol && has loopback && printf ' %s |' "$(ratio "${med[encvol]}" "${med[loopback]}" "${HIB[$w]}")"
		echo
		unset med
	done
} >"$TABLE"

if part lifecycle; then
	mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.0f", k / 1024 }'; }
	{
		[ -s "$TABLE" ] && echo
		echo "| $LC_FILES files, $((LC_BYTES >> 20)) MiB on tmpfs | time (s) | MB/s | cores busy | peak RSS (MiB) | speed vs cp -a |"
		echo "|---|---:|---:|---:|---:|---:|"
		for w in cpa import copy; do
			case $w in
			cpa) label="cp -a into a mounted encvol volume, until umount returns" ;;
			import) label="encvol import into a new volume (with its check)" ;;
			copy) label="encvol copy under another key (with its check)" ;;
			esac
			secs=$(median "$WORK/res/lc.$w.secs")
			printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$secs" "$(mbps "$LC_BYTES" "$secs")" \
				"$(median "$WORK/res/lc.$w.cores")" "$(mib "$(median "$WORK/res/lc.$w.rss")")" \
				"$(ratio "$secs" "$(median "$WORK/res/lc.cpa.secs")" 0)"
		done
	} >>"$TABLE"
fi

if part fsck; then
	{
		[ -s "$TABLE" ] && echo
		echo "| fsck of a $FSCK_MB MiB volume (16 files) | tmpfs | tmpfs huge=always | XFS (loop, on tmpfs) |"
		echo "|---|---:|---:|---:|"
		echo "| encvol fsck, $(nproc) workers (MB/s) | $(median "$WORK/res/fsck.plain") | $(median "$WORK/res/fsck.huge") | $(median "$WORK/res/fsck.xfs") |"
		echo "| raw AES-GCM open of 4 KiB sectors, $(nproc) cores (MB/s) | $(median "$WORK/res/raw.plain") | $(median "$WORK/res/raw.huge") | $(median "$WORK/res/raw.xfs") |"
		echo "| fsck / raw (median of the runs' ratios) | $(median "$WORK/res/fsckratio.plain") | $(median "$WORK/res/fsckratio.huge") | $(median "$WORK/res/fsckratio.xfs") |"
	} >>"$TABLE"
fi

OPS_TABLE=$WORK/ops.md
if has encvol && part fs; then
	{
		echo "| workload | encvol FUSE requests (last run) | by opcode |"
		echo "|---|---:|---|"
		for w in $WORKLOADS; do
			[ -s "$WORK/res/encvol.ops_total.$w" ] || continue
			printf '| %s | %s | %s |\n' "$w" "$(cat "$WORK/res/encvol.ops_total.$w")" "$(cat "$WORK/res/encvol.ops.$w")"
		done
	} >"$OPS_TABLE"
fi

RSS_LINE=""
if has encvol && part fs && [ -s "$WORK/res/encvol.rss_kib" ]; then
	RSS_LINE="encvol daemon peak RSS (VmHWM) over mount + untar: median $(median "$WORK/res/encvol.rss_kib") KiB, max $(sort -g "$WORK/res/encvol.rss_kib" | tail -1) KiB ($(sort -g "$WORK/res/encvol.rss_kib" | tr '\n' ' ')KiB per run)."
fi

if ls "$WORK"/res/*.snap_paused >/dev/null 2>&1; then
	{
		echo
		echo "Snapshot of a ${SNAP_MB} MiB volume while a writer runs in it (medians of $RUNS, each snapshot deleted before the next; writers: random = fio 4 KiB random rewrites of a 256 MiB file at full speed, append = fio 1 MiB sequential writes at 20 MB/s into a 256 MiB file):"
		echo
		echo "| backing file system | writer | method | writes paused (ms), median | max | snapshot time (s), median |"
		echo "|---|---|---|---:|---:|---:|"
		for fsl in tmpfs xfs; do
			case $fsl in tmpfs) name="tmpfs" ;; xfs) name="XFS on a loop device, reflink=1" ;; esac
			for w in random append; do
				k=$fsl-$w
				if [ -s "$WORK/res/$k.snap_paused" ]; then
					echo "| $name | $w | $(cat "$WORK/res/$k.snap_method") | $(median "$WORK/res/$k.snap_paused") | $(sort -g "$WORK/res/$k.snap_paused" | tail -1) | $(median "$WORK/res/$k.snap_secs") |"
				else
					echo "| $name | $w | - | - | - | - |"
				fi
			done
		done
		if [ -n "$XFS_NOTE" ]; then
			echo
			echo "No reflink rows in this run: $XFS_NOTE."
		fi
	} >"$SNAP_TABLE"
fi

REPORT=$WORK/report.md
{
	echo
	echo "## Benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "- Kernel: $(uname -r); CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1) ($(nproc) cores); Go: $(go env GOVERSION)"
	if has gocryptfs; then echo "- gocryptfs: $(gocryptfs -version | head -1)"; fi
	if has securefs; then echo "- securefs: Debian $(dpkg-query -W -f '${Version}' securefs 2>/dev/null || echo '?') (default options: 30 s attribute and entry timeouts, no default_permissions)"; fi
	echo "- Command: \`$ENVLINE $CMDLINE\`"
	echo "- Load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) — other work on the machine skews every column alike."
	echo "- CPU time stolen by the hypervisor during the run: $(awk -v t="$(($(steal_ticks) - STEAL_START))" -v hz="$(getconf CLK_TCK)" -v s="$(($(date +%s) - RUN_START))" -v n="$(nproc)" 'BEGIN { printf "%.1f s of %d s × %d CPUs", t / hz, s, n }')."
	if part fs; then
		echo "- Backing: one tmpfs ($TMPFS_SIZE) for all systems; medians of $RUNS run(s), each run starting with the next system; MB/s = 10^6 bytes/s."
		echo "- Ratios are speed ratios: > 1 means encvol is faster (for seconds rows: other time / encvol time)."
	fi
	if part fsck; then
		echo "- fsck: \`encvol fsck --json\` throughput (bytes authenticated / run time) on a volume of $FSCK_MB MiB written through the mount, against sector's BenchmarkRawGCMOpen4KParallel run right before and after each check; medians of $RUNS run(s)."
	fi
	if part lifecycle; then
		echo "- Import and copy: the tree ($LC_SMALL files of 1 to 64 KiB in 700 directories, $LC_LARGE of $LC_LARGE_MB MiB) and every volume on a tmpfs of their own ($LC_TMPFS_SIZE); medians of $RUNS run(s); MB/s = 10^6 bytes of file content per second; cores busy = user + system CPU seconds of every process involved (for cp -a: cp and the mount daemon) per second; peak RSS of the encvol process (for cp -a: the daemon); speed vs cp -a = cp -a time / time."
	fi
	if [ -n "$RSS_LINE" ]; then echo "- $RSS_LINE"; fi
	echo
	cat "$TABLE"
	if [ -s "$OPS_TABLE" ]; then
		echo
		cat "$OPS_TABLE"
	fi
	if [ -s "${REQ_TABLE:-}" ]; then echo; cat "$REQ_TABLE"; fi
	if [ -s "$SNAP_TABLE" ]; then echo; cat "$SNAP_TABLE"; fi
} >"$REPORT"

cat "$REPORT"
if [ "$APPEND" = 1 ]; then
	mkdir -p "$REPO/docs"
	[ -f "$REPO/docs/performance.md" ] || printf '# Performance\n\nResults of scripts/bench.sh, newest last.\n' >"$REPO/docs/performance.md"
	cat "$REPORT" >>"$REPO/docs/performance.md"
	log "appended to docs/performance.md"
fi
