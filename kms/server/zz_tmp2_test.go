package server

import (
	"bufio"
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

func TestTmpHTTPSpeed(t *testing.T) {
	env := startServer(t, Options{})
	c := newClient(env.url, admin)
	ctx := context.Background()
	md := createKey(t, c, "x")
	gdk, err := c.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{KeyId: md.KeyId, KeySpec: types.DataKeySpecAes256})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := time.Now()
	const n = 3000
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(env.url, admin)
			for j := 0; j < n/16; j++ {
				if _, err := c.Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("http decrypt: %.0f/s", n/time.Since(start).Seconds())
	var lat []float64
	sc := bufio.NewScanner(strings.NewReader(env.logs.String()))
	for sc.Scan() {
		var m map[string]any
		json.Unmarshal(sc.Bytes(), &m)
		if m["op"] == "Decrypt" {
			lat = append(lat, m["latency"].(float64))
		}
	}
	sort.Float64s(lat)
	t.Logf("server latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f", lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)*99/100], lat[len(lat)-1])
}
