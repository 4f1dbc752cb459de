package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/encvol/encvol/kms"
)

func TestTmpStoreSpeed(t *testing.T) {
	st, err := kms.Open(t.TempDir(), kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	md, _ := st.CreateKey(ctx, "a", kms.CreateKeyInput{})
	ec := map[string]string{"a": "b"}
	blob, _, err := st.GenerateDataKeyWithoutPlaintext(ctx, "a", md.KeyID, 32, ec)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := time.Now()
	const n = 60000
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n/16; j++ {
				if _, _, err := st.Decrypt(ctx, "a", blob, ec, ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("store decrypt: %.0f/s", n/time.Since(start).Seconds())
}
