#!/usr/bin/env bash
# bench-kms.sh — Decrypt over HTTP with SigV4 against `encvol kms serve` on
# loopback, 16 concurrent clients, two ways:
#
#   wrk      Debian's wrk (a load generator nobody here wrote) replays one
#            SigV4-signed Decrypt request on 16 connections, closed loop. The
#            server verifies the signature, authorizes, unwraps and audits
#            every replay; wrk's own CPU cost is small, so this measures the
#            server. One wrk thread leaves the second core to the server.
#   sdk      the Go benchmarks in kms/server pointed at the same server
#            (ENCVOL_KMS_BENCH_ENDPOINT): 16 aws-sdk-go-v2 clients in the
#            go test process, each signing every request afresh, closed loop
#            and at a fixed offered rate of 2,000 req/s. The SDK spends about
#            twice the server's CPU per request, so on two cores the closed
#            loop is bounded by the clients.
#
#   share    50 volumes' key monitors against a second `encvol kms serve`
#            over TLS (--tls-self-signed): one customer key, 50 volumes each
#            shared with its own principal through a grant constrained to
#            the volume's encryption context, each monitor checking its
#            access as a sharee's mount does (Decrypt of the key-check blob,
#            marked as a key check), at 2,000 checks/s offered and closed
#            loop (BenchmarkShareMonitorsTLS*, aws-sdk-go-v2 clients in the
#            go test process).
#
# Usage: scripts/bench-kms.sh     (RUNS=3 wrk runs of SECS=10 s; APPEND=1
#                                  appends the table to docs/performance.md;
#                                  WRK=0, SDK=0, SHARE=0 leave a part out)
set -euo pipefail

die() { echo "bench-kms: $*" >&2; exit 1; }
log() { echo "bench-kms: $*" >&2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SECS=${SECS:-10}
APPEND=${APPEND:-1}
SDK=${SDK:-1}
WRK=${WRK:-1}
SHARE=${SHARE:-1}
CONNS=16
# A replayed request must stay inside the server's 5-minute skew window.
[ "$SECS" -le 240 ] || die "SECS must be at most 240: a signed request is accepted for 5 minutes"
command -v go >/dev/null || die "go not found in PATH"
if [ "$WRK" = 1 ] && ! command -v wrk >/dev/null; then
	log "installing wrk"
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null ||
		die "cannot install wrk with apt-get; install it and rerun"
fi
export GOEXPERIMENT=runtimesecret CGO_ENABLED=0

W=$(mktemp -d)
SRV_PID=""
cleanup() {
	if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
		kill "$SRV_PID" 2>/dev/null
		wait "$SRV_PID" 2>/dev/null || true
	fi
	rm -rf "$W"
}
trap cleanup EXIT

log "building encvol and kmsbench"
(cd "$REPO" && go build -o "$W/encvol" ./cmd/encvol && go build -o "$W/kmsbench" ./scripts/kmsbench) || die "go build failed"

export AWS_ACCESS_KEY_ID=AKIDKMSBENCH00000001 AWS_SECRET_ACCESS_KEY=kmsbenchSecret00000000000000000000001
cat >"$W/principals.toml" <<EOF
[[principal]]
name = "bench"
access_key_id = "$AWS_ACCESS_KEY_ID"
secret_access_key = "$AWS_SECRET_ACCESS_KEY"
EOF
chmod 600 "$W/principals.toml"

# serve LOG ARGS...: start `encvol kms serve` on a free loopback port with
# ARGS, logging to LOG; sets SRV_PID and EP (the endpoint it reports).
# The server logs every request at info level, as a deployment would, to a
# file on the same machine. The closed loops measure its capacity, which is
# above the default --rate-limit of one principal, so that limit is off.
serve() {
	local logf=$1; shift
	"$W/encvol" --log-format json kms serve --listen 127.0.0.1:0 "$@" >"$logf" 2>&1 &
	SRV_PID=$!
	EP=""
	for _ in $(seq 200); do
		EP=$(sed -n 's/.*"endpoint":"\([^"]*\)".*/\1/p' "$logf" | head -1)
		[ -n "$EP" ] && break
		kill -0 "$SRV_PID" 2>/dev/null || { cat "$logf" >&2; die "encvol kms serve exited early"; }
		sleep 0.1
	done
	[ -n "$EP" ] || die "encvol kms serve did not report its address (log: $(cat "$logf"))"
	log "server at $EP"
}
serve "$W/server.log" --store "$W/store" --principals "$W/principals.toml" --audit-keep -1 --rate-limit 0

# to_ms converts wrk's latency figures (123.00us, 1.23ms, 1.02s) to ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else { exit 1 } }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; print a[int((NR + 1) / 2)] }'; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$W/rps"; : >"$W/p50"; : >"$W/p90"; : >"$W/p99"
total=0
if [ "$WRK" = 1 ]; then
	for run in $(seq "$RUNS"); do
		# Sign afresh for each run so that no replay comes near the skew limit.
		"$W/kmsbench" --endpoint "$EP" --out "$W/decrypt.lua" || die "kmsbench could not prepare the request"
		wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$W/decrypt.lua" "$EP/" >"$W/wrk.$run" 2>&1 || { cat "$W/wrk.$run" >&2; die "wrk failed"; }
		if grep -q 'Non-2xx' "$W/wrk.$run" || grep -q 'Socket errors' "$W/wrk.$run"; then
			cat "$W/wrk.$run" >&2
			die "run $run: the server refused or dropped requests"
		fi
		awk '/^Requests\/sec:/ { print $2 }' "$W/wrk.$run" >>"$W/rps"
		for p in 50 90 99; do
			to_ms "$(awk -v p="$p%" '$1 == p { print $2 }' "$W/wrk.$run")" >>"$W/p$p" || die "cannot read the $p% latency from wrk's output"
			echo >>"$W/p$p"
		done
		n=$(awk '/requests in/ { print $1 }' "$W/wrk.$run")
		total=$((total + n))
		log "run $run: $(awk '/^Requests\/sec:/ { print $2 }' "$W/wrk.$run") req/s, p99 $(tail -1 "$W/p99") ms"
	done
fi

SDK_ROWS=""
if [ "$SDK" = 1 ]; then
	log "go benchmarks: aws-sdk-go-v2 clients against the same server"
	(cd "$REPO" && ENCVOL_KMS_BENCH_ENDPOINT="$EP" go test -run '^$' -bench 'BenchmarkDecryptHTTP$|BenchmarkDecryptHTTPAt2000$' \
		-benchtime 20000x ./kms/server/) >"$W/gobench" 2>&1 || { cat "$W/gobench" >&2; die "go benchmarks failed"; }
	SDK_ROWS=$(awk '/^BenchmarkDecryptHTTP/ {
		name = $1; sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
		desc = "aws-sdk-go-v2, 16 clients, closed loop"
		if (name ~ /At2000$/) desc = "aws-sdk-go-v2, 16 clients, 2,000 req/s offered"
		printf "| %s (`%s`) | %.0f | %s | %s | %s |\n", desc, name, m["req/s"], m["p50-ms"], m["p90-ms"], m["p99-ms"]
	}' "$W/gobench")
fi

# Every request wrk sent must have reached the key store: count its audit
# records in all of its files (it rotates every 64 MiB; --audit-keep -1
# keeps them). The SDK benchmarks add their own.
audited=$(cat "$W"/store/audit.jsonl* | grep -c '"operation":"Decrypt"' || true)
[ "$audited" -ge "$total" ] || die "wrk counted $total requests but the audit log holds only $audited Decrypt records"
log "audit log: $audited Decrypt records; wrk sent $total"

kill "$SRV_PID" && wait "$SRV_PID" 2>/dev/null || true
SRV_PID=""

SHARE_ROWS=""
if [ "$SHARE" = 1 ]; then
	log "sharing: 50 monitors through grants, over TLS"
	{
		for i in $(seq 0 50); do
			printf '[[principal]]\nname = "bench%02d"\naccess_key_id = "AKIDSHAREBENCH%06d"\nsecret_access_key = "shareBenchSecret%020d"\n\n' "$i" "$i" "$i"
		done
	} >"$W/share-principals.toml"
	chmod 600 "$W/share-principals.toml"
	serve "$W/share-server.log" --store "$W/share-store" --principals "$W/share-principals.toml" --tls-self-signed "$W/tls"
	case "$EP" in https://*) ;; *) die "the sharing server did not report an https endpoint (log: $(cat "$W/share-server.log"))" ;; esac
	(cd "$REPO" && ENCVOL_KMS_BENCH_ENDPOINT="$EP" ENCVOL_KMS_BENCH_CA="$W/tls/ca.pem" go test -run '^$' \
		-bench 'BenchmarkShareMonitorsTLSAt2000$|BenchmarkShareMonitorsTLS$' -benchtime 20000x ./kms/server/) >"$W/sharebench" 2>&1 ||
		{ cat "$W/sharebench" >&2; die "sharing benchmarks failed"; }
	SHARE_ROWS=$(awk '/^BenchmarkShareMonitors/ {
		name = $1; sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
		desc = "50 monitors through grants, TLS, closed loop"
		if (name ~ /At2000$/) desc = "50 monitors through grants, TLS, 2,000 checks/s offered"
		printf "| %s (`%s`) | %.0f | %s | %s | %s |\n", desc, name, m["req/s"], m["p50-ms"], m["p90-ms"], m["p99-ms"]
	}' "$W/sharebench")
	kill "$SRV_PID" && wait "$SRV_PID" 2>/dev/null || true
	SRV_PID=""
fi

WRK_ROW=""
[ "$WRK" = 1 ] && WRK_ROW=$(printf '| wrk, 1 thread, %d connections, closed loop, %d s × %d | %.0f | %s | %s | %s |' \
	"$CONNS" "$SECS" "$RUNS" "$(median <"$W/rps")" "$(median <"$W/p50")" "$(median <"$W/p90")" "$(median <"$W/p99")")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

TABLE=$(
	echo "## KMS Decrypt benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "- Kernel: $(uname -r); CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/ [0-9]*-Core Processor//') ($(nproc) cores); Go: $(go env GOVERSION)"
	WRKV=""; [ "$WRK" = 1 ] && WRKV="; wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
	echo "- Command: \`WRK=$WRK SDK=$SDK SHARE=$SHARE RUNS=$RUNS SECS=$SECS scripts/bench-kms.sh\`$WRKV"
	echo "- Load average (1/5/15 min) at start: $LOAD_START, at end: $LOAD_END"
	echo "- Every row is one \`encvol kms serve\` on loopback, request logging on. wrk: medians of $RUNS runs, $total requests in all; SDK and sharing rows: 20,000 requests each. The audit log of the first server held $audited Decrypt records. Sharing rows: a second server with \`--tls-self-signed\`, 51 principals, one key with 50 grants."
	echo
	echo "| load | req/s | p50 ms | p90 ms | p99 ms |"
	echo "|---|---:|---:|---:|---:|"
	[ -z "$WRK_ROW" ] || echo "$WRK_ROW"
	[ -z "$SDK_ROWS" ] || echo "$SDK_ROWS"
	[ -z "$SHARE_ROWS" ] || echo "$SHARE_ROWS"
)
echo "$TABLE"
if [ "$APPEND" = 1 ]; then
	printf '\n%s\n' "$TABLE" >>"$REPO/docs/performance.md"
	log "appended to docs/performance.md"
fi
