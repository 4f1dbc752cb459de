package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// benchClients is how many concurrent clients the Decrypt benchmarks run.
const benchClients = 16

// loadGenEnv, when set in the environment of this test binary, turns it
// into the load generator of BenchmarkDecryptHTTPOutOfProcess; the value
// is the JSON-encoded loadGenConfig.
const loadGenEnv = "ENCVOL_KMS_BENCH_LOADGEN"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(loadGenEnv); cfg != "" {
		os.Exit(runLoadGen(cfg))
	}
	os.Exit(m.Run())
}

// benchEndpointEnv, when set, points the Decrypt benchmarks at a running
// `encvol kms serve` (credentials from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY) instead of a server in this process:
// scripts/bench-kms.sh measures the real binary that way.
const benchEndpointEnv = "ENCVOL_KMS_BENCH_ENDPOINT"

// decryptBench is what both Decrypt benchmarks send: one blob wrapped
// under a fresh key with an encryption context, as a volume's unlock does.
type decryptBench struct {
	url    string
	p      Principal
	blob   []byte
	encCtx map[string]string
}

// setupDecryptBench prepares a Decrypt benchmark offering rate requests per
// second (0: as fast as the server answers). A closed loop measures the
// server's capacity, so its server has no rate limit; an offered rate runs
// against the default limits, which must not throttle it.
func setupDecryptBench(b *testing.B, rate float64) decryptBench {
	b.Helper()
	d := decryptBench{p: admin}
	if ep := os.Getenv(benchEndpointEnv); ep != "" {
		d.url = ep
		d.p = Principal{Name: "bench", AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY")}
		if d.p.AccessKeyID == "" || d.p.SecretAccessKey == "" {
			b.Fatalf("%s is set: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must name a principal of that server", benchEndpointEnv)
		}
	} else {
		opt := Options{}
		if rate == 0 {
			opt.RateLimit = -1
		}
		d.url = startServer(b, opt).url
	}
	ctx := context.Background()
	setup := newClient(d.url, d.p)
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
	d.blob, d.encCtx = gdk.CiphertextBlob, encCtx
	return d
}

// newBenchClients returns n independent SDK clients (each with its own
// connection pool, as n processes would have) whose connections are already
// open, so dialing is not measured.
func newBenchClients(n int, url, accessKeyID, secret string, blob []byte, encCtx map[string]string) ([]*awskms.Client, error) {
	cs := make([]*awskms.Client, n)
	for i := range cs {
		cs[i] = awskms.New(awskms.Options{
			Region:           testRegion,
			Credentials:      credentials.NewStaticCredentialsProvider(accessKeyID, secret, ""),
			BaseEndpoint:     aws.String(url),
			RetryMaxAttempts: 1,
			HTTPClient:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		})
		if _, err := cs[i].Decrypt(context.Background(), &awskms.DecryptInput{CiphertextBlob: blob, EncryptionContext: encCtx}); err != nil {
			return nil, fmt.Errorf("warm-up Decrypt: %w", err)
		}
	}
	return cs, nil
}

// runDecryptLoad sends n Decrypt requests in total from the clients and
// returns every request's latency and the wall time of the whole run (see
// runLoad).
func runDecryptLoad(cs []*awskms.Client, n int, rate float64, blob []byte, encCtx map[string]string) ([]time.Duration, time.Duration, error) {
	ctx := context.Background()
	return runLoad(len(cs), n, rate, func(i int) error {
		_, err := cs[i].Decrypt(ctx, &awskms.DecryptInput{CiphertextBlob: blob, EncryptionContext: encCtx})
		return err
	})
}

// runLoad makes n calls in total, call(i) from client i of clients
// running concurrently, and returns every call's latency and the wall time
// of the whole run.
//
// With rate 0 the load is a closed loop: each client sends its next
// request as soon as the previous one returned, so the server is saturated
// and latency includes the queueing that saturation implies. With rate > 0
// the load is open: request j is due at start + j/rate whichever client
// sends it, and its latency counts from when it was due, so a server that
// falls behind is charged for the wait rather than slowing the load down.
func runLoad(clients, n int, rate float64, call func(i int) error) ([]time.Duration, time.Duration, error) {
	latencies := make([][]time.Duration, clients)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				j := next.Add(1) - 1
				if j >= int64(n) {
					return
				}
				t0 := time.Now()
				if rate > 0 {
					t0 = start.Add(time.Duration(float64(j) / rate * float64(time.Second)))
					time.Sleep(time.Until(t0))
				}
				err := call(i)
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
	if err, _ := failed.Load().(error); err != nil {
		return nil, 0, fmt.Errorf("Decrypt: %w", err)
	}
	return slices.Concat(latencies...), elapsed, nil
}

// reportLatencies reports throughput and latency percentiles; with -v it
// also logs a latency histogram.
func reportLatencies(b *testing.B, all []time.Duration, elapsed time.Duration) {
	b.Helper()
	if len(all) == 0 {
		b.Fatal("no requests were measured")
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		d := all[min(len(all)-1, int(float64(len(all))*p))]
		return float64(d.Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.90), "p90-ms")
	b.ReportMetric(pct(0.999), "p99.9-ms")
	if testing.Verbose() {
		b.Logf("latency histogram (%d requests):\n%s", len(all), histogram(all))
	}
}

// histogram renders sorted latencies in buckets that double from 250µs.
func histogram(sorted []time.Duration) string {
	var sb strings.Builder
	lo, i := time.Duration(0), 0
	for hi := 250 * time.Microsecond; i < len(sorted); hi *= 2 {
		n := 0
		for i < len(sorted) && sorted[i] < hi {
			n++
			i++
		}
		if n > 0 {
			fmt.Fprintf(&sb, "  %8v – %8v  %6d  %5.2f%%\n", lo, hi, n, 100*float64(n)/float64(len(sorted)))
		}
		lo = hi
	}
	return sb.String()
}

// BenchmarkDecryptHTTP measures Decrypt through the whole stack: the real
// SDK client signing with SigV4, loopback HTTP, signature verification, the
// key store and JSON framing. 16 independent clients (each with its own
// connection pool, as 16 processes would have) run concurrently in this
// process; the benchmark reports requests per second and latency
// percentiles. The clients' CPU time and garbage share the process (and its
// collector) with the server, so the latencies include client overhead that
// BenchmarkDecryptHTTPOutOfProcess keeps apart.
func BenchmarkDecryptHTTP(b *testing.B) {
	d := setupDecryptBench(b, 0)
	cs, err := newBenchClients(benchClients, d.url, d.p.AccessKeyID, d.p.SecretAccessKey, d.blob, d.encCtx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	all, elapsed, err := runDecryptLoad(cs, b.N, 0, d.blob, d.encCtx)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportLatencies(b, all, elapsed)
}

// loadGenConfig tells the load generator process what to send.
type loadGenConfig struct {
	URL         string            `json:"url"`
	AccessKeyID string            `json:"access_key_id"`
	Secret      string            `json:"secret"`
	Blob        []byte            `json:"blob"`
	Context     map[string]string `json:"context"`
	Requests    int               `json:"requests"`
	Clients     int               `json:"clients"`
	Rate        float64           `json:"rate"` // requests/s offered; 0 = closed loop
}

// loadGenResult is what the load generator reports on stdout.
type loadGenResult struct {
	ElapsedNS   int64   `json:"elapsed_ns"`
	LatenciesNS []int64 `json:"latencies_ns"`
	Error       string  `json:"error,omitempty"`
}

// runLoadGen is the load generator's main: it opens the clients, writes
// "ready", waits for a line on stdin, runs the load and writes a
// loadGenResult. It returns the process exit code.
func runLoadGen(cfgJSON string) int {
	var cfg loadGenConfig
	res := loadGenResult{}
	out := json.NewEncoder(os.Stdout)
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		res.Error = "load generator config: " + err.Error()
		_ = out.Encode(res)
		return 1
	}
	cs, err := newBenchClients(cfg.Clients, cfg.URL, cfg.AccessKeyID, cfg.Secret, cfg.Blob, cfg.Context)
	if err != nil {
		res.Error = err.Error()
		_ = out.Encode(res)
		return 1
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		res.Error = "waiting for the start signal: " + err.Error()
		_ = out.Encode(res)
		return 1
	}
	all, elapsed, err := runDecryptLoad(cs, cfg.Requests, cfg.Rate, cfg.Blob, cfg.Context)
	if err != nil {
		res.Error = err.Error()
		_ = out.Encode(res)
		return 1
	}
	res.ElapsedNS = elapsed.Nanoseconds()
	res.LatenciesNS = make([]int64, len(all))
	for i, d := range all {
		res.LatenciesNS[i] = d.Nanoseconds()
	}
	if err := out.Encode(res); err != nil {
		return 1
	}
	return 0
}

// BenchmarkDecryptHTTPOutOfProcess is BenchmarkDecryptHTTP with the 16
// clients in a separate process (this test binary re-executed as a load
// generator), as real clients would be: the server process then carries
// only the server's CPU time and garbage, runs with the collector setting
// of `encvol kms serve` (TuneGC), and CPU/heap profiles of this benchmark
// show the server alone. Both processes still share this machine's cores.
func BenchmarkDecryptHTTPOutOfProcess(b *testing.B) { benchDecryptOutOfProcess(b, 0) }

// BenchmarkDecryptHTTPOutOfProcessAt2000 offers 2,000 Decrypt requests per
// second from 16 clients in a separate process (an open loop, see
// runDecryptLoad) instead of saturating the server: it measures latency at
// the load the server is specified for rather than at its limit.
func BenchmarkDecryptHTTPOutOfProcessAt2000(b *testing.B) { benchDecryptOutOfProcess(b, 2000) }

// BenchmarkDecryptHTTPAt2000 is BenchmarkDecryptHTTPOutOfProcessAt2000 with
// the clients in this process.
func BenchmarkDecryptHTTPAt2000(b *testing.B) {
	d := setupDecryptBench(b, 2000)
	cs, err := newBenchClients(benchClients, d.url, d.p.AccessKeyID, d.p.SecretAccessKey, d.blob, d.encCtx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	all, elapsed, err := runDecryptLoad(cs, b.N, 2000, d.blob, d.encCtx)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportLatencies(b, all, elapsed)
}

func benchDecryptOutOfProcess(b *testing.B, rate float64) {
	defer TuneGC()()
	d := setupDecryptBench(b, rate)
	exe, err := os.Executable()
	if err != nil {
		b.Fatalf("find the test binary: %v", err)
	}
	cfg, err := json.Marshal(loadGenConfig{URL: d.url, AccessKeyID: d.p.AccessKeyID, Secret: d.p.SecretAccessKey,
		Blob: d.blob, Context: d.encCtx, Requests: b.N, Clients: benchClients, Rate: rate})
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), loadGenEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the load generator: %v", err)
	}
	fail := func(format string, args ...any) {
		b.Helper()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.Fatalf(format, args...)
	}
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		// A failed start reports itself as a result line.
		fail("load generator did not get ready: %q %v", line, err)
	}
	b.ResetTimer()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		fail("start the load generator: %v", err)
	}
	var res loadGenResult
	if err := json.NewDecoder(rd).Decode(&res); err != nil {
		fail("read the load generator's result: %v", err)
	}
	b.StopTimer()
	if err := cmd.Wait(); err != nil && res.Error == "" {
		b.Fatalf("load generator: %v", err)
	}
	if res.Error != "" {
		b.Fatalf("load generator: %s", res.Error)
	}
	all := make([]time.Duration, len(res.LatenciesNS))
	for i, ns := range res.LatenciesNS {
		all[i] = time.Duration(ns)
	}
	reportLatencies(b, all, time.Duration(res.ElapsedNS))
}
