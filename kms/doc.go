// Package kms is encvol's key store: customer master keys (CMKs) with AWS
// KMS semantics, kept in a directory and used in process by the local KMS
// backend and by `encvol kms serve`.
//
// # Keys
//
// A CMK has a UUID key ID, an ARN arn:aws:kms:<region>:<account>:key/<id>
// (region "local" and account "000000000000" unless Options say otherwise;
// ARNs of every identity the store was opened under keep resolving, see
// identity.go),
// aliases (alias/NAME; alias/aws/ is refused), a description, an origin
// (AWS_KMS: generated material; EXTERNAL: imported material, BYOK) and a
// state: Enabled, Disabled, PendingDeletion (7–30 days, then the key is gone
// and every reference answers NotFoundException) or PendingImport. Only
// symmetric keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) exist. Only Enabled
// keys wrap or unwrap data keys; DescribeKey works in every state.
//
// Key material has versions. Rotation (automatic every 90–2560 days, or on
// demand, at most 25 times) appends a version; new blobs use the newest,
// and every blob names the version that made it, so old blobs keep
// decrypting. Keys with imported material never rotate. Imported material
// may expire (ValidTo): the key then returns to PendingImport until the same
// material is imported again. Deletion, rotation and expiry are applied
// lazily by the first call after they fall due.
//
// # Principals and grants
//
// Every method takes the calling principal by name; principals are named
// to callers as IAM users (arn:aws:iam::<account>:user/<name>), and either
// form is accepted where a principal is an argument. The creator of a key
// owns it and may do everything; LocalPrincipal ("local", the in-process
// caller that holds the store's root secret anyway) administers every key.
// A key policy (policy.go: a documented subset of AWS's language, enforced
// or refused, never stored unenforced) may name further administrators
// ("kms:*") and users of cryptographic operations under encryption-context
// conditions. Other principals need a grant naming the operation,
// optionally constrained to encryption contexts
// (EncryptionContextEquals/Subset); administrative operations are for
// administrators only. A principal's service key (its alias/encvol/default) may
// be used by that principal for data keys, and by nobody disabled, deleted,
// rotated on demand, tagged, re-described, given a policy or shared through
// grants.
//
// Aliases belong to the principal that creates them (aliasscope.go), as
// AWS aliases belong to an account, and the service key is per principal:
// each principal's alias/encvol/default names a key only it (and
// LocalPrincipal) may use.
//
// # Ciphertext blobs
//
// See the comment on blobFormat in data.go: version byte 0xE1, 16-byte key
// ID, 4-byte key version, 16-byte nonce, AES-256-GCM under a per-blob key
// derived from the key material and the nonce, with the header and the
// canonical encryption context as additional data.
//
// # Storage, concurrency and crash safety
//
// See the comment at the top of store.go for the directory layout. Every
// call takes a flock-based readers/writer lock, so several processes may
// share one store; a change made by one is seen by the next call of every
// other. State is replaced atomically (temp file, fsync, rename, fsync
// directory), so a process killed at any point leaves the old or the new
// state, never a torn one.
//
// # Audit
//
// audit.jsonl receives one JSON object per data-key operation
// (GenerateDataKey*, Encrypt, Decrypt, ReEncrypt), per administrative
// operation and per lazy event, successful or not: time, principal,
// operation, key ID, key version, encryption context, result ("ok" or the
// error code) and message. It never holds key material or plaintext.
//
// The one exception to "one object per operation" are the periodic key
// checks of mounted volumes, Decrypts the caller marks with a KeyCheck:
// their first and last check and every change of result are recorded one
// by one, the checks in between that repeat a result (routine successes,
// or the same refusal again while a mount waits for its key) as one
// summary record per mount and interval that counts them (see
// checksummary.go). Every check is accounted for in some record's count.
//
// The log is rotated by size (Options.AuditMaxSize, default 64 MiB) into
// audit.jsonl.1 (newest) ... audit.jsonl.N, keeping Options.AuditKeep
// rotated files (default 10); Audit reads them all, oldest first. See
// auditrotate.go for how several processes append and rotate safely.
package kms
