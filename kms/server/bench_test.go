package server

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// BenchmarkDecryptHTTP measures Decrypt through the whole stack: the real
// SDK client signing with SigV4, loopback HTTP, signature verification, the
// key store and JSON framing. 16 independent clients (each with its own
// connection pool, as 16 processes would have) run concurrently; the
// benchmark reports requests per second and the 99th percentile latency.
func BenchmarkDecryptHTTP(b *testing.B) {
	const clients = 16
	env := startServer(b, Options{})
	ctx := context.Background()
	setup := newClient(env.url, admin)
	ck, err := setup.CreateKey(ctx, &awskms.CreateKeyInput{})
	if err != nil {
		b.Fatalf("CreateKey: %v", err)
	}
	encCtx := map[string]string{"encvol:volume-id": "vol-bench"}
	gdk, err := setup.GenerateDataKeyWithoutPlaintext(ctx, &awskms.GenerateDataKeyWithoutPlaintextInput{
		KeyId: ck.KeyMetadata.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: encCtx})
	if err != nil {
		b.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	cs := make([]*awskms.Client, clients)
	for i := range cs {
		cs[i] = awskms.New(awskms.Options{
			Region:           testRegion,
			Credentials:      credentials.NewStaticCredentialsProvider(admin.AccessKeyID, admin.SecretAccessKey, ""),
			BaseEndpoint:     aws.String(env.url),
			RetryMaxAttempts: 1,
			HTTPClient:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		})
		// Warm up connections so dialing is not measured.
		if _, err := cs[i].Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx}); err != nil {
			b.Fatalf("warm-up Decrypt: %v", err)
		}
	}

	latencies := make([][]time.Duration, clients)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				_, err := cs[i].Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: encCtx})
				latencies[i] = append(latencies[i], time.Since(t0))
				if err != nil {
					failed.Store(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("Decrypt: %v", err)
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	p99 := all[min(len(all)-1, len(all)*99/100)]
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
}
