package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
)

// decryptLog records the plaintexts of the Decrypt responses that pass
// through a proxy in front of `encvol kms serve`.
type decryptLog struct {
	mu         sync.Mutex
	plaintexts [][]byte
}

func (d *decryptLog) proxy(t *testing.T, target string) *httptest.Server {
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if !strings.HasSuffix(r.Request.Header.Get("X-Amz-Target"), ".Decrypt") {
			return nil
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var out struct{ Plaintext string }
		if json.Unmarshal(body, &out) == nil && out.Plaintext != "" {
			if pt, err := base64.StdEncoding.DecodeString(out.Plaintext); err == nil {
				d.mu.Lock()
				d.plaintexts = append(d.plaintexts, pt)
				d.mu.Unlock()
			}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv
}

// The plaintext data key crosses the network once per mount: a mount
// checked every second for a minute gets it in one Decrypt response, and
// every other check decrypts the header's key-check blob instead.
func TestDataKeyCrossesTheNetworkOnce(t *testing.T) {
	t.Parallel()
	e := newGXEnv(t, "served", "")
	var log decryptLog
	px := log.proxy(t, e.addr)
	cfg := e.writeConfig("via-proxy.toml", fmt.Sprintf("[kms.corp]\ntype = \"aws\"\nendpoint = %q\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\n",
		px.URL, gxAlice.id, gxAlice.secret), "")
	e.mustWith(cfg, "kms", "create-key", "--alias", "alias/capture")
	backing := filepath.Join(e.dir, "b")
	e.mustWith(cfg, "create", "--backing", backing, "--key", "alias/capture")
	h, err := keywrap.ReadHeader(backing)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version < keywrap.HeaderVersionKeyCheck || len(h.KeyCheck) == 0 {
		t.Fatalf("a new volume's header is version %d without a key-check blob", h.Version)
	}
	mnt := filepath.Join(e.dir, "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupMount(t, mnt)
	// Create unwraps its new data key once to prove the KMS round trip;
	// what is measured is the mount.
	log.mu.Lock()
	log.plaintexts = nil
	log.mu.Unlock()
	e.mustWith(cfg, "mount", "-o", "key_check_interval=1s", backing, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		st := e.status(mnt)
		if st.Gate != "open" {
			t.Fatalf("gate %s during the capture: %s", st.Gate, st.GateCause)
		}
		time.Sleep(time.Second) // the mount's own 1 s checks are what is measured
	}
	e.mustWith(cfg, "umount", mnt)

	check := keywrap.KeyCheckPlaintext(h.VolumeID)
	log.mu.Lock()
	defer log.mu.Unlock()
	var dks, checks int
	for _, pt := range log.plaintexts {
		if bytes.Equal(pt, check) {
			checks++
		} else {
			dks++
		}
	}
	if dks > 1 {
		t.Errorf("the data key was in %d Decrypt responses during a 60 s mount, want at most 1", dks)
	}
	if checks < 50 {
		t.Errorf("only %d key checks in 60 s with a 1 s interval", checks)
	}
	t.Logf("60 s mount, 1 s interval: %d Decrypt responses carried the data key, %d the key-check plaintext", dks, checks)
}
