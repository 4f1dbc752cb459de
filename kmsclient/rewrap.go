package kmsclient

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/encvol/encvol/keywrap"
	"github.com/encvol/encvol/kms"
)

// Rewrapper moves a wrapped data key to another key: ReEncrypt within one
// KMS (the plaintext never leaves it), Encrypt for a data key unwrapped
// from another KMS. Both backends implement it; it is separate from Client
// because a volume's mount never needs it.
type Rewrapper interface {
	// ReEncrypt unwraps blob (bound to srcCtx, under srcKeyRef when given)
	// and wraps the same plaintext under dstKeyRef bound to dstCtx. It
	// returns the new blob and the ARN of the key that wrapped it.
	ReEncrypt(ctx context.Context, blob []byte, srcCtx map[string]string, srcKeyRef, dstKeyRef string, dstCtx map[string]string) (newBlob []byte, dstARN string, err error)
	// EncryptKey wraps dk under keyRef bound to encCtx and returns the
	// blob and the ARN of the key that wrapped it.
	EncryptKey(ctx context.Context, keyRef string, dk *keywrap.Key, encCtx map[string]string) (blob []byte, keyARN string, err error)
}

var (
	_ Rewrapper = (*local)(nil)
	_ Rewrapper = (*awsBackend)(nil)
)

func (l *local) ReEncrypt(ctx context.Context, blob []byte, srcCtx map[string]string, srcKeyRef, dstKeyRef string, dstCtx map[string]string) (newBlob []byte, dstARN string, err error) {
	keywrap.Secretly(func() {
		err = l.withSeal(func() (err error) {
			newBlob, _, dstARN, err = l.store.ReEncrypt(ctx, kms.LocalPrincipal, blob, srcCtx, srcKeyRef, dstKeyRef, dstCtx)
			return err
		})
	})
	if err != nil {
		return nil, "", l.wrap("ReEncrypt", dstKeyRef, err)
	}
	return newBlob, dstARN, nil
}

func (l *local) EncryptKey(ctx context.Context, keyRef string, dk *keywrap.Key, encCtx map[string]string) (blob []byte, keyARN string, err error) {
	keywrap.Secretly(func() {
		err = l.withSeal(func() (err error) {
			blob, keyARN, err = l.store.Encrypt(ctx, kms.LocalPrincipal, keyRef, dk.Bytes(), encCtx)
			return err
		})
	})
	if err != nil {
		return nil, "", l.wrap("Encrypt", keyRef, err)
	}
	return blob, keyARN, nil
}

func (b *awsBackend) ReEncrypt(ctx context.Context, blob []byte, srcCtx map[string]string, srcKeyRef, dstKeyRef string, dstCtx map[string]string) ([]byte, string, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	in := &awskms.ReEncryptInput{CiphertextBlob: blob, SourceEncryptionContext: srcCtx,
		DestinationKeyId: aws.String(dstKeyRef), DestinationEncryptionContext: dstCtx}
	if srcKeyRef != "" {
		in.SourceKeyId = aws.String(srcKeyRef)
	}
	out, err := b.kms.ReEncrypt(ctx, in)
	if err != nil {
		return nil, "", b.wrap("ReEncrypt", dstKeyRef, err)
	}
	return out.CiphertextBlob, aws.ToString(out.KeyId), nil
}

// EncryptKey runs under keywrap.Secretly, so the request's copies of the
// plaintext built on this goroutine are erased once unreachable.
func (b *awsBackend) EncryptKey(ctx context.Context, keyRef string, dk *keywrap.Key, encCtx map[string]string) (blob []byte, keyARN string, err error) {
	keywrap.Secretly(func() {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		pt := append([]byte(nil), dk.Bytes()...)
		defer clear(pt)
		var out *awskms.EncryptOutput
		out, err = b.kms.Encrypt(cctx, &awskms.EncryptInput{KeyId: aws.String(keyRef), Plaintext: pt, EncryptionContext: encCtx})
		if err != nil {
			err = b.wrap("Encrypt", keyRef, err)
			return
		}
		blob, keyARN = out.CiphertextBlob, aws.ToString(out.KeyId)
	})
	return blob, keyARN, err
}
