#!/usr/bin/env bash
# Interop test: drives `encvol kms serve` with awscli, a KMS client nobody on
# this project wrote, over real HTTP with SigV4. It checks AWS's exception
# names and awscli's exit codes (v2: 254 for a service error, v1: 255) for the
# key life cycle, encryption context, rotation, grants, key policies, tags,
# imported key material, ARNs carrying the server's region and account, and
# authentication. Prints "ok: ..." last; exits non-zero at the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/kms-serve-lib.sh

kms_find_awscli
step "client: $AWS ($AWS_VERSION); service errors exit $SVC_RC"

command -v openssl >/dev/null 2>&1 || fail "openssl is needed to wrap key material for import-key-material; install it (apt-get install openssl)"

kms_build
AK=AKIDAWSCLIADMIN00001; SK=awscliAdminSecret0000000000000000001
RAK=AKIDAWSCLIREADER0001; RSK=awscliReaderSecret000000000000000001
kms_principals admin "$AK" "$SK" reader "$RAK" "$RSK"
REGION=us-east-1 ACCOUNT=111122223333
kms_start --region "$REGION" --account-id "$ACCOUNT"

kms_aws_env "$AK" "$SK" "$REGION"

step "create-key, create-alias, describe-key via the alias"
ok "create-key" kmscli create-key --description "awscli interop" --query KeyMetadata.[KeyId,Arn,KeyState,KeySpec,KeyManager]
read -r KID ARN STATE SPEC MANAGER <<<"$OUT"
[ -n "$KID" ] || fail "create-key returned no key ID"
equal "key ARN (the server's region and account)" "$ARN" "arn:aws:kms:$REGION:$ACCOUNT:key/$KID"
ok "describe-key AWSAccountId" kmscli describe-key --key-id "$KID" --query KeyMetadata.AWSAccountId
equal "AWSAccountId" "$OUT" "$ACCOUNT"
equal "new key state" "$STATE" Enabled
equal "new key spec" "$SPEC" SYMMETRIC_DEFAULT
equal "new key manager" "$MANAGER" CUSTOMER
ok "create-alias" kmscli create-alias --alias-name alias/awscli-test --target-key-id "$KID"
ok "describe-key via alias" kmscli describe-key --key-id alias/awscli-test --query KeyMetadata.KeyId
equal "alias target" "$OUT" "$KID"
# Named by ARN this time: the same request again within one second would
# carry the same signature, which the server refuses as a replay.
refused "create-alias twice" AlreadyExistsException kmscli create-alias --alias-name alias/awscli-test --target-key-id "$ARN"
refused "describe-key of an unknown key" NotFoundException kmscli describe-key --key-id 00000000-0000-0000-0000-000000000000
refused "describe-key by an ARN of another region" NotFoundException kmscli describe-key --key-id "arn:aws:kms:eu-west-1:$ACCOUNT:key/$KID"
ok "list-aliases ARN" kmscli list-aliases --key-id "$KID" --query 'Aliases[0].AliasArn'
equal "alias ARN" "$OUT" "arn:aws:kms:$REGION:$ACCOUNT:alias/awscli-test"
refused "request signed for another region" InvalidSignatureException "$AWS" --endpoint-url "$EP" --region eu-west-1 kms list-keys
refused "asymmetric key spec" UnsupportedOperationException kmscli create-key --key-spec RSA_2048 --key-usage ENCRYPT_DECRYPT
refused "HMAC key spec" UnsupportedOperationException kmscli create-key --key-spec HMAC_256 --key-usage GENERATE_VERIFY_MAC

step "generate-data-key-without-plaintext with an encryption context, decrypt"
ok "generate-data-key-without-plaintext" kmscli generate-data-key-without-plaintext --key-id alias/awscli-test \
	--key-spec AES_256 --encryption-context volume=vol-1,purpose=test --query CiphertextBlob
base64 -d <<<"$OUT" >"$T/blob" && [ -s "$T/blob" ] || fail "generate-data-key-without-plaintext: no ciphertext blob"
decrypt_blob() { kmscli decrypt --ciphertext-blob "fileb://$T/blob" --encryption-context volume=vol-1,purpose=test --query KeyId "$@"; }
ok "decrypt" decrypt_blob
equal "decrypt KeyId" "$OUT" "$ARN"
refused "decrypt with the wrong context" InvalidCiphertextException \
	kmscli decrypt --ciphertext-blob "fileb://$T/blob" --encryption-context volume=vol-2,purpose=test
refused "decrypt without the context" InvalidCiphertextException kmscli decrypt --ciphertext-blob "fileb://$T/blob"

step "generate-data-key plaintext matches decrypt; encrypt/decrypt round trip"
ok "generate-data-key" kmscli generate-data-key --key-id "$KID" --number-of-bytes 32 --query [Plaintext,CiphertextBlob]
read -r GPT GBLOB <<<"$OUT"
base64 -d <<<"$GBLOB" >"$T/gblob"
ok "decrypt generated key" kmscli decrypt --ciphertext-blob "fileb://$T/gblob" --query Plaintext
equal "decrypted data key" "$OUT" "$GPT"
printf 'secret note' >"$T/note"
ok "encrypt" kmscli encrypt --key-id "$KID" --plaintext "fileb://$T/note" --query CiphertextBlob
base64 -d <<<"$OUT" >"$T/note.enc"
ok "decrypt note" kmscli decrypt --ciphertext-blob "fileb://$T/note.enc" --query Plaintext
equal "decrypted note" "$(base64 -d <<<"$OUT")" "secret note"

step "disable-key, enable-key"
ok "disable-key" kmscli disable-key --key-id "$KID"
refused "decrypt under a disabled key" DisabledException decrypt_blob
grep -qF "$ARN is disabled" "$T/err" || fail "DisabledException does not name $ARN: $(cat "$T/err")"
refused "generate-data-key under a disabled key" DisabledException kmscli generate-data-key --key-id "$KID" --key-spec AES_256
ok "enable-key" kmscli enable-key --key-id "$KID"
ok "decrypt after enable-key" decrypt_blob

step "schedule-key-deletion, cancel-key-deletion"
refused "3-day deletion window" ValidationException kmscli schedule-key-deletion --key-id "$KID" --pending-window-in-days 3
refused "31-day deletion window" ValidationException kmscli schedule-key-deletion --key-id "$KID" --pending-window-in-days 31
ok "schedule-key-deletion 7 days" kmscli schedule-key-deletion --key-id "$KID" --pending-window-in-days 7 --query [KeyState,PendingWindowInDays]
read -r STATE DAYS <<<"$OUT"
equal "state after schedule-key-deletion" "$STATE" PendingDeletion
equal "pending window" "$DAYS" 7
refused "decrypt pending deletion" KMSInvalidStateException decrypt_blob
ok "cancel-key-deletion" kmscli cancel-key-deletion --key-id "$KID" --query KeyId
equal "cancel-key-deletion KeyId" "$OUT" "$ARN"
ok "describe-key after cancel" kmscli describe-key --key-id "$KID" --query KeyMetadata.KeyState
equal "state after cancel-key-deletion" "$OUT" Disabled
refused "decrypt after cancel (still disabled)" DisabledException decrypt_blob
ok "enable-key after cancel" kmscli enable-key --key-id "$ARN"
ok "decrypt after cancel + enable" decrypt_blob

step "rotation"
ok "enable-key-rotation" kmscli enable-key-rotation --key-id "$KID"
ok "get-key-rotation-status" kmscli get-key-rotation-status --key-id "$KID" --query KeyRotationEnabled
equal "rotation enabled" "$OUT" True
ok "disable-key-rotation" kmscli disable-key-rotation --key-id "$KID"
ok "get-key-rotation-status after disable" kmscli get-key-rotation-status --key-id "$KID" --query KeyRotationEnabled
equal "rotation disabled" "$OUT" False
ok "decrypt after rotation changes" decrypt_blob

step "grants: a second principal is denied until granted"
as_reader() { AWS_ACCESS_KEY_ID=$RAK AWS_SECRET_ACCESS_KEY=$RSK "$@"; }
refused "reader decrypt without a grant" AccessDeniedException as_reader decrypt_blob
refused "reader disable-key" AccessDeniedException as_reader kmscli disable-key --key-id "$KID"
grep -qF "User: arn:aws:iam::$ACCOUNT:user/reader is not authorized to perform: kms:DisableKey on resource: $ARN" "$T/err" ||
	fail "AccessDeniedException does not name the principal's ARN, the operation and the key: $(cat "$T/err")"
READER_ARN="arn:aws:iam::$ACCOUNT:user/reader"
ok "create-grant to an IAM user ARN" kmscli create-grant --key-id "$KID" --grantee-principal "$READER_ARN" \
	--retiring-principal admin --operations Decrypt DescribeKey --query GrantId
GID=$OUT
[ -n "$GID" ] || fail "create-grant returned no GrantId"
ok "list-grants" kmscli list-grants --key-id "$KID" --query 'Grants[].[GrantId,GranteePrincipal,RetiringPrincipal,IssuingAccount]'
grep -q "^$GID[[:space:]]*$READER_ARN[[:space:]]*arn:aws:iam::$ACCOUNT:user/admin[[:space:]]*arn:aws:iam::$ACCOUNT:root$" <<<"$OUT" ||
	fail "list-grants does not show grant $GID to $READER_ARN with ARNs: $OUT"
ok "list-grants by grantee name" kmscli list-grants --key-id "$KID" --grantee-principal reader --query 'length(Grants)'
equal "grants to reader" "$OUT" 1
ok "list-retirable-grants" kmscli list-retirable-grants --retiring-principal "arn:aws:iam::$ACCOUNT:user/admin" --query 'Grants[].GrantId'
equal "retirable grants of admin" "$OUT" "$GID"
refused "grant to another account's principal" InvalidArnException \
	kmscli create-grant --key-id "$KID" --grantee-principal arn:aws:iam::999999999999:user/reader --operations Decrypt
ok "reader decrypt with a grant" as_reader decrypt_blob
equal "reader decrypt KeyId" "$OUT" "$ARN"
refused "reader generate-data-key (not granted)" AccessDeniedException as_reader kmscli generate-data-key --key-id "$KID" --key-spec AES_256
ok "revoke-grant" kmscli revoke-grant --key-id "$KID" --grant-id "$GID"
refused "reader decrypt after revoke-grant" AccessDeniedException as_reader decrypt_blob

step "list-keys, list-aliases"
ok "second create-key" kmscli create-key --description other --query KeyMetadata.KeyId
KID2=$OUT
ok "list-keys" kmscli list-keys --query 'Keys[].KeyId'
grep -qw "$KID" <<<"$OUT" && grep -qw "$KID2" <<<"$OUT" || fail "list-keys lacks $KID or $KID2: $OUT"
ok "list-keys paginated" kmscli list-keys --page-size 1 --query 'Keys[].KeyId'
[ "$(tr -s '[:space:]' '\n' <<<"$OUT" | grep -c .)" -eq 2 ] || fail "list-keys with --page-size 1 did not return both keys: $OUT"
ok "list-aliases" kmscli list-aliases --query 'Aliases[].[AliasName,TargetKeyId]'
grep -q "^alias/awscli-test[[:space:]]*$KID$" <<<"$OUT" || fail "list-aliases lacks alias/awscli-test -> $KID: $OUT"
ok "list-aliases --key-id" kmscli list-aliases --key-id "$KID2" --query 'length(Aliases)'
equal "aliases of the second key" "$OUT" 0

step "tags, description"
ok "create-key with tags" kmscli create-key --description tagged --tags TagKey=team,TagValue=storage TagKey=env,TagValue=test --query KeyMetadata.KeyId
TKID=$OUT
ok "tag-resource" kmscli tag-resource --key-id "$TKID" --tags TagKey=env,TagValue=prod TagKey=owner,TagValue=ops
ok "untag-resource" kmscli untag-resource --key-id "arn:aws:kms:$REGION:$ACCOUNT:key/$TKID" --tag-keys team
ok "list-resource-tags" kmscli list-resource-tags --key-id "$TKID" --query 'Tags[].[TagKey,TagValue]'
equal "tags" "$(tr -s '[:space:]' ' ' <<<"$OUT")" "env prod owner ops "
refused "reserved tag prefix" TagException kmscli tag-resource --key-id "$TKID" --tags TagKey=aws:x,TagValue=y
ok "update-key-description" kmscli update-key-description --key-id "$TKID" --description "tagged, renamed"
ok "describe-key description" kmscli describe-key --key-id "$TKID" --query KeyMetadata.Description
equal "description" "$OUT" "tagged, renamed"

step "key policies: effective access; a policy outside the subset refused, one inside it enforced"
ok "create-grant with an encryption context constraint" kmscli create-grant --key-id "$KID" --grantee-principal "$READER_ARN" \
	--operations Decrypt --constraints EncryptionContextSubset={volume=vol-1} --query GrantId
GID2=$OUT
ok "list-key-policies" kmscli list-key-policies --key-id "$KID" --query PolicyNames
equal "policy names" "$OUT" default
ok "get-key-policy" kmscli get-key-policy --key-id "$KID" --policy-name default --query Policy
grep -q "\"arn:aws:iam::$ACCOUNT:user/admin\"" <<<"$OUT" && grep -q '"kms:\*"' <<<"$OUT" ||
	fail "get-key-policy does not show the owner's administration: $OUT"
grep -q "EncvolGrant$GID2" <<<"$OUT" && grep -q '"kms:EncryptionContext:volume"' <<<"$OUT" ||
	fail "get-key-policy does not show grant $GID2 and its constraint: $OUT"
cat >"$T/policy-outside.json" <<POLICY
{"Version":"2012-10-17","Statement":[
 {"Sid":"Owner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::$ACCOUNT:user/admin"},"Action":"kms:*","Resource":"*"},
 {"Sid":"NoDeny","Effect":"Deny","Principal":{"AWS":"$READER_ARN"},"Action":"kms:Decrypt","Resource":"*"}]}
POLICY
refused "policy outside the subset" MalformedPolicyDocumentException \
	kmscli put-key-policy --key-id "$KID" --policy-name default --policy "file://$T/policy-outside.json"
grep -q 'statement 2 (Sid "NoDeny")' "$T/err" && grep -q Deny "$T/err" || fail "the refusal does not name the statement and the reason: $(cat "$T/err")"
ok "get-key-policy after the refusal" kmscli get-key-policy --key-id "$KID" --policy-name default --query Policy
grep -q NoDeny <<<"$OUT" && fail "a refused policy was stored: $OUT"
ok "revoke-grant before the policy" kmscli revoke-grant --key-id "$KID" --grant-id "$GID2"
cat >"$T/policy.json" <<POLICY
{"Version":"2012-10-17","Statement":[
 {"Sid":"Owner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::$ACCOUNT:user/admin"},"Action":"kms:*","Resource":"*"},
 {"Sid":"ReaderDecrypts","Effect":"Allow","Principal":{"AWS":"$READER_ARN"},"Action":"kms:Decrypt","Resource":"*",
  "Condition":{"StringEquals":{"kms:EncryptionContext:volume":"vol-1"}}}]}
POLICY
refused "reader decrypt before the policy" AccessDeniedException as_reader decrypt_blob
ok "put-key-policy inside the subset" kmscli put-key-policy --key-id "$KID" --policy-name default --policy "file://$T/policy.json"
ok "get-key-policy returns it" kmscli get-key-policy --key-id "$KID" --policy-name default --query Policy
grep -q ReaderDecrypts <<<"$OUT" || fail "get-key-policy does not return the policy put: $OUT"
ok "reader decrypt under the policy" as_reader decrypt_blob
equal "reader decrypt KeyId" "$OUT" "$ARN"
refused "reader generate-data-key (not in the policy)" AccessDeniedException as_reader \
	kmscli generate-data-key --key-id "$KID" --key-spec AES_256 --encryption-context volume=vol-1
refused "reader disable-key (named only for kms:Decrypt)" AccessDeniedException as_reader kmscli disable-key --key-id "$KID"
grep -qF "kms:DisableKey on resource: $ARN" "$T/err" || fail "the refusal does not name the operation and the key: $(cat "$T/err")"

step "rotation history"
# Debian's awscli 2.9 predates RotateKeyOnDemand and ListKeyRotations; pip's
# awscli 1.x has them, so use whichever client on this machine does.
ROT_AWS=""
for c in "$AWS" "$(command -v aws 2>/dev/null)"; do
	[ -n "$c" ] && "$c" kms list-key-rotations help >/dev/null 2>&1 && { ROT_AWS=$c; break; }
done
if [ -n "$ROT_AWS" ]; then
	rotcli() { "$ROT_AWS" --endpoint-url "$EP" --output text kms "$@"; }
	ok "rotate-key-on-demand ($ROT_AWS)" rotcli rotate-key-on-demand --key-id "$KID"
	ok "list-key-rotations ($ROT_AWS)" rotcli list-key-rotations --key-id "$KID" --query 'Rotations[-1].[KeyId,RotationType]'
	read -r RKID RTYPE <<<"$OUT"
	equal "rotation key" "$RKID" "$ARN"
	equal "rotation type" "$RTYPE" ON_DEMAND
else
	echo "note: no awscli on this machine models ListKeyRotations; kms/server TestTagsDescriptionRotationsImport covers it through the Go SDK"
fi

step "imported key material: import-key-material, delete-imported-key-material"
ok "create-key --origin EXTERNAL" kmscli create-key --origin EXTERNAL --description byok --query KeyMetadata.KeyId
XKID=$OUT
ok "get-parameters-for-import" kmscli get-parameters-for-import --key-id "$XKID" --wrapping-algorithm RSAES_OAEP_SHA_256 \
	--wrapping-key-spec RSA_2048 --query '[ImportToken,PublicKey]'
read -r TOKEN PUB <<<"$OUT"
base64 -d <<<"$TOKEN" >"$T/token" && base64 -d <<<"$PUB" >"$T/wrap.der" || fail "import parameters are not base64"
openssl rand 32 >"$T/material"
openssl pkeyutl -encrypt -pubin -keyform DER -inkey "$T/wrap.der" -in "$T/material" -out "$T/material.enc" \
	-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 2>"$T/err" || fail "openssl: $(cat "$T/err")"
ok "import-key-material" kmscli import-key-material --key-id "$XKID" --import-token "fileb://$T/token" \
	--encrypted-key-material "fileb://$T/material.enc" --expiration-model KEY_MATERIAL_DOES_NOT_EXPIRE
ok "encrypt under imported material" kmscli encrypt --key-id "$XKID" --plaintext "fileb://$T/note" --query CiphertextBlob
ok "delete-imported-key-material" kmscli delete-imported-key-material --key-id "$XKID"
ok "state after delete-imported-key-material" kmscli describe-key --key-id "$XKID" --query KeyMetadata.KeyState
equal "state" "$OUT" PendingImport
refused "encrypt without material" KMSInvalidStateException kmscli encrypt --key-id "$XKID" --plaintext "fileb://$T/note"
refused "delete-imported-key-material of a generated key" UnsupportedOperationException kmscli delete-imported-key-material --key-id "$KID"

step "authentication"
refused "wrong secret" InvalidSignatureException env AWS_SECRET_ACCESS_KEY=wrongSecretWrongSecret0000000000 "$AWS" --endpoint-url "$EP" kms list-keys
refused "unknown access key" UnrecognizedClientException env AWS_ACCESS_KEY_ID=AKIDNOBODY0000000001 "$AWS" --endpoint-url "$EP" kms list-keys
code=$(curl -s -o "$T/anon" -w '%{http_code}' -X POST -H 'X-Amz-Target: TrentService.ListKeys' \
	-H 'Content-Type: application/x-amz-json-1.1' --data '{}' "$EP/" 2>/dev/null) || code=curl-missing
if [ "$code" != curl-missing ]; then
	equal "unsigned request status" "$code" 400
	grep -q MissingAuthenticationTokenException "$T/anon" || fail "unsigned request: $(cat "$T/anon")"
fi

step "server log holds no key material"
for secret in "$GPT" "$(base64 -w0 <"$T/blob")" "$SK" "$RSK"; do
	grep -qF -- "$secret" "$T/server.log" && fail "server log contains key material or a secret"
done
grep -q '"op":"Decrypt"' "$T/server.log" && grep -q '"principal":"reader"' "$T/server.log" || fail "server log lacks request lines"

kms_stop
echo "ok: awscli ($AWS_VERSION) against encvol kms serve: keys, ARNs of $REGION/$ACCOUNT, aliases, data keys, context, disable/enable, deletion window, cancel, rotation, grants, retirable grants, key policies, tags, descriptions, imported material, listing, signatures"
