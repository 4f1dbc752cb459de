package kmsclient

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/encvol/encvol/kms"
)

// ReEncrypter wraps a ciphertext blob anew without handing its plaintext
// to the caller: the KMS unwraps blob under srcCtx and wraps the result
// under dstKeyRef bound to dstCtx (AWS KMS ReEncrypt). The local and the
// AWS backends implement it.
type ReEncrypter interface {
	ReEncrypt(ctx context.Context, blob []byte, srcKeyRef string, srcCtx map[string]string, dstKeyRef string, dstCtx map[string]string) (newBlob []byte, dstARN string, err error)
}

// ErrNoReEncrypt is returned by ReEncrypt for a client without it.
var ErrNoReEncrypt = errors.New("this KMS client cannot re-encrypt")

// ReEncrypt calls c's ReEncrypt, or fails with ErrNoReEncrypt.
func ReEncrypt(ctx context.Context, c Client, blob []byte, srcKeyRef string, srcCtx map[string]string, dstKeyRef string, dstCtx map[string]string) ([]byte, string, error) {
	r, ok := c.(ReEncrypter)
	if !ok {
		return nil, "", ErrNoReEncrypt
	}
	return r.ReEncrypt(ctx, blob, srcKeyRef, srcCtx, dstKeyRef, dstCtx)
}

func (l *local) ReEncrypt(ctx context.Context, blob []byte, srcKeyRef string, srcCtx map[string]string, dstKeyRef string, dstCtx map[string]string) ([]byte, string, error) {
	out, _, dst, err := l.store.ReEncrypt(ctx, kms.LocalPrincipal, blob, srcCtx, srcKeyRef, dstKeyRef, dstCtx)
	if err != nil {
		return nil, "", l.wrap("ReEncrypt", srcKeyRef, err)
	}
	return out, dst, nil
}

func (b *awsBackend) ReEncrypt(ctx context.Context, blob []byte, srcKeyRef string, srcCtx map[string]string, dstKeyRef string, dstCtx map[string]string) ([]byte, string, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	in := &awskms.ReEncryptInput{
		CiphertextBlob: blob, SourceEncryptionContext: srcCtx,
		DestinationKeyId: aws.String(dstKeyRef), DestinationEncryptionContext: dstCtx,
	}
	if srcKeyRef != "" {
		in.SourceKeyId = aws.String(srcKeyRef)
	}
	out, err := b.kms.ReEncrypt(ctx, in)
	if err != nil {
		return nil, "", b.wrap("ReEncrypt", srcKeyRef, err)
	}
	return out.CiphertextBlob, aws.ToString(out.KeyId), nil
}
