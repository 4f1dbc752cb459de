#!/usr/bin/env bash
# Interop test of sharing: awscli against `encvol kms serve --tls-self-signed`
# over HTTPS, trusting the server's own CA with --ca-bundle. A principal and
# a group are added to the principals file while the server runs; the key's
# owner makes grants constrained to one volume's encryption context (to a
# user and to a group ARN), lists and revokes them; the grantee unwraps that
# volume's key and no other, and may not disable the key or grant it on.
# Kept short: every awscli call costs a second or two. Prints "ok: ..." last.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/kms-serve-lib.sh

kms_find_awscli
step "client: $AWS ($AWS_VERSION); service errors exit $SVC_RC"
kms_build
AK=AKIDSHAREOWNER000001; SK=shareOwnerSecret00000000000000000001
kms_principals owner "$AK" "$SK"
REGION=us-east-1 ACCOUNT=111122223333
kms_start --region "$REGION" --account-id "$ACCOUNT" --tls-self-signed "$T/tls"
case "$EP" in https://*) ;; *) fail "--tls-self-signed serves $EP, want https" ;; esac
CA=$T/tls/ca.pem
[ -s "$CA" ] || fail "no $CA after the first start"
kms_aws_env "$AK" "$SK" "$REGION"
kmstls() { "$AWS" --endpoint-url "$EP" --ca-bundle "$CA" --output text kms "$@"; }

step "TLS: the server's CA is needed"
"$AWS" --endpoint-url "$EP" --output text kms list-keys >"$T/out" 2>"$T/err" && fail "awscli trusted the self-signed server without --ca-bundle"
grep -qi "ssl\|certificate" "$T/err" || fail "without --ca-bundle: want a certificate error, got: $(cat "$T/err")"

step "a principal and a group added while the server runs"
"$T/encvol" kms principal add bob --principals "$T/principals.toml" --json >"$T/bob.json" || fail "kms principal add bob"
BAK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_key_id"])' "$T/bob.json")
BSK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret_access_key"])' "$T/bob.json")
"$T/encvol" kms group set team --members bob --principals "$T/principals.toml" >/dev/null || fail "kms group set team"
as_bob() { AWS_ACCESS_KEY_ID=$BAK AWS_SECRET_ACCESS_KEY=$BSK "$@"; }
for _ in $(seq 50); do grep -q '"groups":1' "$T/server.log" && break; sleep 0.1; done
grep -q '"groups":1' "$T/server.log" || fail "the server did not reload the principals file: $(tail -3 "$T/server.log")"

step "create-grant constrained to one volume's encryption context, list-grants"
ok "create-key" kmstls create-key --description "shared volumes" --query KeyMetadata.KeyId
KID=$OUT
ok "generate-data-key-without-plaintext (vol-1)" kmstls generate-data-key-without-plaintext --key-id "$KID" --key-spec AES_256 \
	--encryption-context encvol:volume-id=vol-1 --query CiphertextBlob
base64 -d <<<"$OUT" >"$T/blob1"
BOB_ARN="arn:aws:iam::$ACCOUNT:user/bob"
ok "create-grant to bob" kmstls create-grant --key-id "$KID" --grantee-principal "$BOB_ARN" --name encvol-share:vol-1 \
	--operations Decrypt DescribeKey --constraints 'EncryptionContextEquals={encvol:volume-id=vol-1}' --query GrantId
GID=$OUT
ok "create-grant to group team" kmstls create-grant --key-id "$KID" --grantee-principal "arn:aws:iam::$ACCOUNT:group/team" \
	--name encvol-share:vol-1:read-only --operations Decrypt DescribeKey --constraints 'EncryptionContextEquals={encvol:volume-id=vol-1}' --query GrantId
GGID=$OUT
ok "list-grants" kmstls list-grants --key-id "$KID" --query 'Grants[].[GrantId,Name,GranteePrincipal,Constraints.EncryptionContextEquals."encvol:volume-id"]'
grep -q "^$GID[[:space:]]*encvol-share:vol-1[[:space:]]*$BOB_ARN[[:space:]]*vol-1$" <<<"$OUT" || fail "list-grants lacks the grant to bob with its constraint: $OUT"
grep -q "^$GGID[[:space:]]*encvol-share:vol-1:read-only[[:space:]]*arn:aws:iam::$ACCOUNT:group/team[[:space:]]*vol-1$" <<<"$OUT" ||
	fail "list-grants lacks the grant to group team: $OUT"

step "the grantee: this volume only, no administration"
ok "bob decrypts vol-1" as_bob kmstls decrypt --ciphertext-blob "fileb://$T/blob1" --encryption-context encvol:volume-id=vol-1 --query KeyId
refused "bob decrypts with another volume's context" AccessDeniedException \
	as_bob kmstls decrypt --ciphertext-blob "fileb://$T/blob1" --encryption-context encvol:volume-id=vol-2
refused "bob disables the key" AccessDeniedException as_bob kmstls disable-key --key-id "$KID"
grep -qF "user/bob is not authorized to perform: kms:DisableKey on resource: arn:aws:kms:$REGION:$ACCOUNT:key/$KID" "$T/err" ||
	fail "AccessDeniedException does not name bob, kms:DisableKey and the key: $(cat "$T/err")"
refused "bob grants the key on" AccessDeniedException as_bob kmstls create-grant --key-id "$KID" --grantee-principal owner --operations Decrypt

step "revoke-grant: bob keeps access through the group, then loses it"
ok "revoke-grant (bob's)" kmstls revoke-grant --key-id "$KID" --grant-id "$GID"
ok "bob decrypts through group team" as_bob kmstls decrypt --ciphertext-blob "fileb://$T/blob1" --encryption-context encvol:volume-id=vol-1 --query KeyId
ok "revoke-grant (the group's)" kmstls revoke-grant --key-id "$KID" --grant-id "$GGID"
refused "bob decrypts after both revokes" AccessDeniedException \
	as_bob kmstls decrypt --ciphertext-blob "fileb://$T/blob1" --encryption-context encvol:volume-id=vol-1

kms_stop
echo "ok: awscli over TLS (--ca-bundle with the server's own CA): principal and group added while serving, constrained grants to a user and a group ARN, list-grants, revoke-grant, AccessDenied for a non-owner disable and re-grant"
