#!/usr/bin/env bash
# Interop test: Terraform's AWS provider (hashicorp/aws 5.100) manages keys
# on `encvol kms serve` unchanged. It starts a server, points the provider's
# kms endpoint at it and runs init, apply (aws_kms_key with description,
# deletion window, rotation and tags; aws_kms_alias; aws_kms_grant to a second
# principal's ARN with an encryption-context constraint; data "aws_kms_key"),
# plan (no changes), an in-place change of description and tags, plan (no
# changes again) and destroy (deletion scheduled), checking the server's side
# with awscli at each step. The provider comes from a local mirror, never
# the network.
#
# The mirror is the first of these that holds hashicorp/aws 5.100.x for this
# platform (a directory in Terraform's filesystem-mirror layout, packed or
# unpacked):
#   1. $ENCVOL_TF_PROVIDER_MIRROR
#   2. the filesystem_mirror paths and plugin_cache_dir of the CLI
#      configuration ($TF_CLI_CONFIG_FILE, else ~/.terraformrc), and
#      $TF_PLUGIN_CACHE_DIR
#   3. Terraform's implied local mirror directories: ~/.terraform.d/plugins,
#      $XDG_DATA_HOME/terraform/plugins (~/.local/share/terraform/plugins) and
#      terraform/plugins in each of $XDG_DATA_DIRS (/usr/local/share:/usr/share)
#   4. a directory holding registry.terraform.io one level below the prefixes
#      of add-on software, /opt and /usr/local (such as /opt/NAME)
# Without terraform on PATH it prints one line saying the test was not run
# and exits 0; with terraform but no mirror it fails.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v terraform >/dev/null 2>&1; then
	echo "!!!!!!!! terraform is not installed: the Terraform interop test (scripts/kms-terraform-test.sh) was NOT run !!!!!!!!"
	exit 0
fi
. scripts/kms-serve-lib.sh
started=$(date +%s)

PROVIDER_VERSION="5.100"
PLATFORM=$(terraform version -json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["platform"])') ||
	fail "terraform version -json does not name the platform"
step "terraform: $(terraform version 2>/dev/null | head -1) on $PLATFORM"

# has_provider DIR: DIR is a filesystem mirror with hashicorp/aws 5.100.x.
has_provider() {
	local d=$1/registry.terraform.io/hashicorp/aws
	[ -n "$1" ] && [ -d "$d" ] || return 1
	compgen -G "$d/$PROVIDER_VERSION.*/$PLATFORM/terraform-provider-aws*" >/dev/null ||
		compgen -G "$d/terraform-provider-aws_$PROVIDER_VERSION.*_$PLATFORM.zip" >/dev/null
}

# mirror_candidates prints the places to look, in order, one a line.
mirror_candidates() {
	local rc=${TF_CLI_CONFIG_FILE:-$HOME/.terraformrc}
	if [ -r "$rc" ]; then
		sed -n 's/^[[:space:]]*\(path\|plugin_cache_dir\)[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\2/p' "$rc"
	fi
	[ -n "${TF_PLUGIN_CACHE_DIR:-}" ] && echo "$TF_PLUGIN_CACHE_DIR"
	echo "$HOME/.terraform.d/plugins"
	echo "${XDG_DATA_HOME:-$HOME/.local/share}/terraform/plugins"
	local IFS=:
	for d in ${XDG_DATA_DIRS:-/usr/local/share:/usr/share}; do echo "$d/terraform/plugins"; done
	for d in /opt/*/ /usr/local/*/; do [ -d "$d/registry.terraform.io" ] && echo "${d%/}"; done
}

MIRROR=""
if [ -n "${ENCVOL_TF_PROVIDER_MIRROR:-}" ]; then
	has_provider "$ENCVOL_TF_PROVIDER_MIRROR" ||
		fail "ENCVOL_TF_PROVIDER_MIRROR=$ENCVOL_TF_PROVIDER_MIRROR holds no registry.terraform.io/hashicorp/aws $PROVIDER_VERSION.x for $PLATFORM"
	MIRROR=$ENCVOL_TF_PROVIDER_MIRROR
else
	while IFS= read -r d; do
		if has_provider "$d"; then MIRROR=$d; break; fi
	done < <(mirror_candidates)
fi
[ -n "$MIRROR" ] || fail "terraform is installed but no local mirror of hashicorp/aws $PROVIDER_VERSION.x for $PLATFORM was found (looked in: $(mirror_candidates | tr '\n' ' ')); set ENCVOL_TF_PROVIDER_MIRROR to a filesystem-mirror directory that holds it"
step "provider mirror: $MIRROR"

kms_find_awscli
kms_build
AK=AKIDTFADMIN000000001; SK=terraformAdminSecret00000000000001
APP_AK=AKIDTFAPP00000000001; APP_SK=terraformAppSecret0000000000000001
kms_principals admin "$AK" "$SK" app "$APP_AK" "$APP_SK"
REGION=eu-west-2 ACCOUNT=210987654321
kms_start --region "$REGION" --account-id "$ACCOUNT"
kms_aws_env "$AK" "$SK" "$REGION"
APP_ARN="arn:aws:iam::$ACCOUNT:user/app"

W=$T/tf
mkdir -p "$W"
cat >"$T/terraform.rc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
EOF
export TF_CLI_CONFIG_FILE=$T/terraform.rc TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0
unset TF_LOG TF_DATA_DIR TF_WORKSPACE

cat >"$W/main.tf" <<EOF
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> $PROVIDER_VERSION.0" }
  }
}

variable "description" { type = string }
variable "tags" { type = map(string) }

provider "aws" {
  region                      = "$REGION"
  access_key                  = "$AK"
  secret_key                  = "$SK"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {
    kms = "$EP"
  }
}

resource "aws_kms_key" "volumes" {
  description             = var.description
  deletion_window_in_days = 7
  enable_key_rotation     = true
  tags                    = var.tags
}

resource "aws_kms_alias" "volumes" {
  name          = "alias/terraform-volumes"
  target_key_id = aws_kms_key.volumes.key_id
}

resource "aws_kms_grant" "app" {
  name              = "app-volume-1"
  key_id            = aws_kms_key.volumes.key_id
  grantee_principal = "$APP_ARN"
  operations        = ["Decrypt", "GenerateDataKey", "DescribeKey"]
  constraints {
    encryption_context_subset = { "encvol:volume-id" = "vol-1" }
  }
}

# Read after the key's changes are applied, so the outputs show them.
data "aws_kms_key" "by_alias" {
  key_id     = aws_kms_alias.volumes.name
  depends_on = [aws_kms_key.volumes]
}

output "key_id" { value = aws_kms_key.volumes.key_id }
output "key_arn" { value = aws_kms_key.volumes.arn }
output "alias_arn" { value = aws_kms_alias.volumes.arn }
output "data_key" {
  value = {
    arn            = data.aws_kms_key.by_alias.arn
    aws_account_id = data.aws_kms_key.by_alias.aws_account_id
    description    = data.aws_kms_key.by_alias.description
    enabled        = data.aws_kms_key.by_alias.enabled
    key_manager    = data.aws_kms_key.by_alias.key_manager
    key_spec       = data.aws_kms_key.by_alias.key_spec
    key_state      = data.aws_kms_key.by_alias.key_state
    key_usage      = data.aws_kms_key.by_alias.key_usage
    multi_region   = data.aws_kms_key.by_alias.multi_region
    origin         = data.aws_kms_key.by_alias.origin
  }
}
EOF
vars() { printf '{"description": "%s", "tags": %s}\n' "$1" "$2" >"$W/terraform.tfvars.json"; }

# tf NAME SUBCOMMAND ARGS...: run terraform in $W, output in $T/NAME.log,
# exit code in TF_RC.
tf() {
	local name=$1 sub=$2 t0; shift 2
	t0=$(date +%s)
	(cd "$W" && terraform "$sub" -no-color "$@") >"$T/$name.log" 2>&1
	TF_RC=$?
	echo "   $name: terraform $sub took $(($(date +%s) - t0)) s"
}
tf_ok() {
	tf "$@"
	[ "$TF_RC" -eq 0 ] || { tail -40 "$T/$1.log"; fail "terraform $2 exited $TF_RC"; }
}
# summary NAME: the log's summary lines, shown and kept for the record.
summary() { grep -E '^(Plan:|Apply complete|Destroy complete|No changes)' "$T/$1.log" | sed "s/^/   $1: /"; }
has() { grep -qF -- "$2" "$T/$1.log" || { tail -40 "$T/$1.log"; fail "$1: output lacks \"$2\""; }; }
# no_drift NAME: a plan finds nothing to change (exit 0, "No changes.").
no_drift() {
	tf "$1" plan -input=false -detailed-exitcode
	summary "$1"
	[ "$TF_RC" -eq 0 ] || { cat "$T/$1.log"; fail "$1: the plan wants changes (exit $TF_RC): the server does not read back what Terraform wrote"; }
	has "$1" "No changes."
}
# tags_are WANT: the key's tags as "K V K V ", from the server.
tags_are() {
	ok "list-resource-tags" kmscli list-resource-tags --key-id "$KID" --query 'Tags[].[TagKey,TagValue]'
	equal "tags" "$(tr -s '[:space:]' ' ' <<<"$OUT")" "$1"
}

step "terraform init (provider from the mirror)"
tf_ok init init -input=false
has init "Installing hashicorp/aws v$PROVIDER_VERSION."

step "terraform apply: key, alias, grant, data source"
vars "encvol terraform interop" '{"team": "storage", "env": "test"}'
tf_ok apply1 apply -input=false -auto-approve
summary apply1
has apply1 "Apply complete! Resources: 3 added, 0 changed, 0 destroyed."
tf_ok output output -json
python3 - "$T/output.log" "$REGION" "$ACCOUNT" >"$T/ids" <<'EOF' || fail "terraform outputs: $(cat "$T/output.log")"
import json, sys
out = {k: v["value"] for k, v in json.load(open(sys.argv[1])).items()}
region, account, kid = sys.argv[2], sys.argv[3], out["key_id"]
arn = f"arn:aws:kms:{region}:{account}:key/{kid}"
want = {"arn": arn, "aws_account_id": account, "description": "encvol terraform interop", "enabled": True,
        "key_manager": "CUSTOMER", "key_spec": "SYMMETRIC_DEFAULT", "key_state": "Enabled",
        "key_usage": "ENCRYPT_DECRYPT", "multi_region": False, "origin": "AWS_KMS"}
assert out["key_arn"] == arn, (out["key_arn"], arn)
assert out["alias_arn"] == f"arn:aws:kms:{region}:{account}:alias/terraform-volumes", out["alias_arn"]
for k, v in want.items():
    assert out["data_key"][k] == v, (k, out["data_key"][k], v)
print(kid, arn)
EOF
read -r KID ARN <"$T/ids"
step "key $ARN"

step "the server's side: description, rotation, tags, grant with its constraint"
ok "describe-key" kmscli describe-key --key-id alias/terraform-volumes --query 'KeyMetadata.[Arn,Description,KeyState]'
equal "key by alias" "$OUT" "$ARN	encvol terraform interop	Enabled"
ok "get-key-rotation-status" kmscli get-key-rotation-status --key-id "$KID" --query KeyRotationEnabled
equal "rotation" "$OUT" True
tags_are "env test team storage "
ok "list-grants" kmscli list-grants --key-id "$KID" --query 'Grants[].[Name,GranteePrincipal,Constraints.EncryptionContextSubset."encvol:volume-id"]'
equal "grant" "$OUT" "app-volume-1	$APP_ARN	vol-1"
as_app() { AWS_ACCESS_KEY_ID=$APP_AK AWS_SECRET_ACCESS_KEY=$APP_SK "$@"; }
ok "app generate-data-key for vol-1" as_app kmscli generate-data-key --key-id "$ARN" --key-spec AES_256 \
	--encryption-context encvol:volume-id=vol-1 --query KeyId
equal "app data key's key" "$OUT" "$ARN"
refused "app generate-data-key for vol-2" AccessDeniedException as_app kmscli generate-data-key --key-id "$ARN" \
	--key-spec AES_256 --encryption-context encvol:volume-id=vol-2

step "terraform plan after apply: no changes"
no_drift plan1

step "in-place change of description and tags"
vars "encvol terraform interop, renamed" '{"env": "prod", "owner": "ops"}'
tf change plan -input=false -detailed-exitcode -out="$T/change.plan"
summary change
[ "$TF_RC" -eq 2 ] || { cat "$T/change.log"; fail "the changed configuration plans no change (exit $TF_RC)"; }
has change "aws_kms_key.volumes will be updated in-place"
has change "Plan: 0 to add, 1 to change, 0 to destroy."
tf_ok apply2 apply -input=false "$T/change.plan"
summary apply2
has apply2 "Apply complete! Resources: 0 added, 1 changed, 0 destroyed."
ok "describe-key after the change" kmscli describe-key --key-id "$KID" --query KeyMetadata.Description
equal "description" "$OUT" "encvol terraform interop, renamed"
tags_are "env prod owner ops "

step "terraform plan after the change: no changes"
no_drift plan2

step "terraform destroy: deletion scheduled, alias and grant gone"
tf_ok destroy destroy -input=false -auto-approve -refresh=false
summary destroy
has destroy "Destroy complete! Resources: 3 destroyed."
ok "describe-key after destroy" kmscli describe-key --key-id "$KID" --query 'KeyMetadata.[KeyState,PendingDeletionWindowInDays]'
equal "state after destroy" "$OUT" "PendingDeletion	7"
ok "list-aliases after destroy" kmscli list-aliases --query 'length(Aliases)'
equal "aliases after destroy" "$OUT" 0
ok "list-grants after destroy" kmscli list-grants --key-id "$KID" --query 'length(Grants)'
equal "grants after destroy" "$OUT" 0

kms_stop
echo "ok: terraform with hashicorp/aws $PROVIDER_VERSION against encvol kms serve ($REGION/$ACCOUNT): init, apply, plan without changes, in-place change, plan without changes, destroy in $(($(date +%s) - started)) s"
