// Package keywrap owns the key material of a volume once it has left the KMS:
// locked, zeroizable key memory ([Key]), the HKDF-SHA256 subkeys of the data key
// ([DeriveSubkeys]) and the authenticated volume header file ([Header]).
//
// The data key (DK) never encrypts anything itself; every use goes through a
// subkey with its own label, so a weakness in one use cannot leak into another.
// The package does no network I/O: wrapping and unwrapping the DK is the KMS
// client's job, and the header only stores the wrapped blob.
package keywrap
