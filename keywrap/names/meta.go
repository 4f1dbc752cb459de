package names

import "github.com/encvol/encvol/keywrap"

// LabelMetaMAC derives the key that authenticates the plaintext mode and
// owner of an entry (header version 3; docs/format.md, "Metadata").
const LabelMetaMAC = "encvol v3 names meta-mac"

// MetaTagLen is the length of a metadata tag.
const MetaTagLen = 16

// SetAuthMeta marks the codec as one of a volume whose entries carry
// authenticated metadata. Call it before the codec is shared.
func (c *Codec) SetAuthMeta() { c.authMeta = true }

// AuthMeta reports whether entries carry authenticated metadata.
func (c *Codec) AuthMeta() bool { return c.authMeta }

// MetaTag returns HMAC-SHA256(meta MAC key, id || rec)[:16]: the tag that
// binds a metadata record rec to the entry whose file or directory ID is
// id, so that a changed field, or a record copied to another entry, fails.
func (c *Codec) MetaTag(id, rec []byte) ([]byte, error) {
	release, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	out := make([]byte, MetaTagLen)
	keywrap.Secretly(func() {
		st := c.metaPool.Get().(*sivScratch)
		copy(out, st.syntheticIV(id, rec))
		c.metaPool.Put(st)
	})
	return out, nil
}
