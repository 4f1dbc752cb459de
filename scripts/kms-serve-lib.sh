# Shared by the interop scripts that drive `encvol kms serve` with clients
# nobody on this project wrote (awscli, Terraform). Source it from the
# project root; it makes a temp dir $T (removed on exit, with the server
# stopped) and gives:
#   fail MSG / step MSG             stop with an error / print a step line
#   kms_build                       build encvol into $T/encvol
#   kms_principals NAME AKID SK ... write $T/principals.toml (mode 0600)
#   kms_start ARGS...               start `encvol kms serve` on a free loopback
#                                   port with extra ARGS; sets SRV_PID and EP
#   kms_stop                        SIGTERM the server; fails unless it exits 0
#   kms_find_awscli                 pick (or install) awscli: sets AWS,
#                                   AWS_VERSION and SVC_RC, its exit code for
#                                   a service error
#   kms_aws_env AKID SECRET REGION  make awscli sign as that principal for
#                                   REGION, reading nothing of this machine's
#   kmscli ARGS...                  awscli's kms ARGS against the server (text)
#   ok / refused / equal            checks of one command (see below)

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '== %s\n' "$*"; }

T=$(mktemp -d)
SRV_PID=""
kms_cleanup() {
	if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
		kill "$SRV_PID" 2>/dev/null
		wait "$SRV_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap kms_cleanup EXIT

kms_build() {
	step "building encvol"
	CGO_ENABLED=0 GOEXPERIMENT=runtimesecret go build -o "$T/encvol" ./cmd/encvol 2>"$T/build.log" || { tail -20 "$T/build.log"; fail "go build ./cmd/encvol"; }
}

kms_principals() {
	: >"$T/principals.toml"
	chmod 600 "$T/principals.toml"
	while [ $# -ge 3 ]; do
		printf '[[principal]]\nname = "%s"\naccess_key_id = "%s"\nsecret_access_key = "%s"\n\n' "$1" "$2" "$3" >>"$T/principals.toml"
		shift 3
	done
}

# Port 0: the kernel picks a free port and the server logs the one it bound,
# so there is no window in which another process can take it.
kms_start() {
	step "starting encvol kms serve $*"
	"$T/encvol" --log-format json kms serve --listen 127.0.0.1:0 --store "$T/store" --principals "$T/principals.toml" "$@" >"$T/server.log" 2>&1 &
	SRV_PID=$!
	EP=""
	for _ in $(seq 200); do
		EP=$(sed -n 's/.*"endpoint":"\([^"]*\)".*/\1/p' "$T/server.log" | head -1)
		[ -n "$EP" ] && break
		kill -0 "$SRV_PID" 2>/dev/null || { cat "$T/server.log"; fail "encvol kms serve exited early"; }
		sleep 0.1
	done
	[ -n "$EP" ] || { cat "$T/server.log"; fail "encvol kms serve did not report its address within 20 s"; }
	step "server at $EP"
}

kms_stop() {
	kill "$SRV_PID" && wait "$SRV_PID"
	local rc=$?
	SRV_PID=""
	[ $rc -eq 0 ] || fail "encvol kms serve exited $rc on SIGTERM (want a clean shutdown)"
}

kms_find_awscli() {
	# Debian's awscli installs /usr/bin/aws, which a pyenv shim earlier on PATH may
	# shadow: prefer the full path, fall back to whatever `aws` is on PATH.
	# ENCVOL_AWSCLI=/path/to/aws picks another awscli (for example v1 from pip).
	if [ -n "${ENCVOL_AWSCLI:-}" ]; then
		:
	elif [ ! -x /usr/bin/aws ] && ! command -v aws >/dev/null 2>&1; then
		step "installing awscli"
		SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
		$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq awscli >/dev/null ||
			fail "cannot install awscli with apt-get; install it and rerun"
	fi
	if [ -n "${ENCVOL_AWSCLI:-}" ]; then AWS=$ENCVOL_AWSCLI
	elif [ -x /usr/bin/aws ]; then AWS=/usr/bin/aws
	else AWS=$(command -v aws) || fail "awscli not found"; fi
	AWS_VERSION=$("$AWS" --version 2>&1) || fail "$AWS --version failed: $AWS_VERSION"
	case "$AWS_VERSION" in
	aws-cli/1.*) SVC_RC=255 ;;
	*) SVC_RC=254 ;;
	esac
}

kms_aws_env() {
	export AWS_ACCESS_KEY_ID=$1 AWS_SECRET_ACCESS_KEY=$2 AWS_DEFAULT_REGION=$3 AWS_REGION=$3
	export AWS_EC2_METADATA_DISABLED=true AWS_PAGER="" AWS_MAX_ATTEMPTS=1 AWS_RETRY_MODE=standard
	export AWS_CONFIG_FILE="$T/no-config" AWS_SHARED_CREDENTIALS_FILE="$T/no-credentials"
	unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL
}

kmscli() { "$AWS" --endpoint-url "$EP" --output text kms "$@"; }

# ok DESC CMD...: CMD must succeed; its stdout is left in $OUT.
ok() {
	local desc=$1; shift
	OUT=$("$@" 2>"$T/err")
	local rc=$?
	[ $rc -eq 0 ] || fail "$desc: exit $rc: $(cat "$T/err")"
}
# refused DESC EXCEPTION CMD...: CMD must fail as a service error naming EXCEPTION.
refused() {
	local desc=$1 exc=$2; shift 2
	"$@" >"$T/out" 2>"$T/err"
	local rc=$?
	[ $rc -ne 0 ] || fail "$desc: succeeded, want $exc"
	[ $rc -eq "$SVC_RC" ] || fail "$desc: exit $rc, want $SVC_RC: $(cat "$T/err")"
	grep -q "($exc)" "$T/err" || fail "$desc: want $exc, got: $(cat "$T/err")"
}
# equal DESC GOT WANT
equal() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; }
