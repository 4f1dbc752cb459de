package volume

// The drill of `encvol verify --drill`: disable the key, measure how fast
// the mount refuses I/O and a fresh mount fails, enable it, measure the
// reopening.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/encvol/encvol/kmsclient"
)

// CheckDrillKey refuses keys the drill must not or cannot disable: the
// service key and keys that are not Enabled.
func CheckDrillKey(ctx context.Context, adm kmsclient.Admin, keyID string) (kmsclient.KeyInfo, error) {
	info, err := adm.DescribeKey(ctx, keyID)
	if err != nil {
		return info, fmt.Errorf("drill: describe key %s: %w", keyID, err)
	}
	if info.KeyManager == "AWS" || slices.Contains(info.Aliases, kmsclient.DefaultKeyAlias) {
		return info, fmt.Errorf("drill refused: the volume's data key is wrapped under the service key %s (%s), and %w by users; "+
			"drills need a volume under a customer key (`encvol kms create-key --alias alias/NAME`, then `encvol create --key alias/NAME`)",
			kmsclient.DefaultKeyAlias, info.Arn, ErrServiceKey)
	}
	if info.State != "Enabled" {
		return info, fmt.Errorf("drill refused: key %s is %s, not Enabled; enable it first (`encvol kms enable-key %s`)", info.Arn, info.State, info.KeyID)
	}
	return info, nil
}

type readResult struct {
	data       []byte
	err        error
	start, end time.Time
}

// startRead reads path in a goroutine: in hang mode the read blocks until
// the gate opens, and the drill must keep its own clock meanwhile.
func startRead(path string) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		r := readResult{start: time.Now()}
		r.data, r.err = os.ReadFile(path)
		r.end = time.Now()
		ch <- r
	}()
	return ch
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runDrill disables the key, measures the gate closing, tries a fresh
// mount, re-enables the key and measures I/O resuming. Its deferred
// enable runs on every path out, including panics and cancellation.
func runDrill(ctx context.Context, opt VerifyOptions, c *canary, rep *VerifyReport, d *DrillReport, log zerolog.Logger) {
	start := time.Now()
	adm := opt.Admin
	keyRef := d.KeyARN
	if keyRef == "" {
		keyRef = opt.Header.KeyID
	}
	limit := opt.KeyCheckInterval + drillSlack
	d.CloseLimitMS = ms(limit)
	disabled := false
	defer func() {
		if disabled && !d.ReEnabled {
			// Not the caller's ctx: it may be the reason we are leaving.
			ectx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := adm.EnableKey(ectx, keyRef); err != nil {
				log.Error().Err(err).Str("op", "drill").Msg("could not re-enable the key after the drill")
				d.Error = strings.TrimPrefix(d.Error+"; ", "; ") + fmt.Sprintf("re-enabling key %s failed: %v; run `encvol kms enable-key %s`", d.KeyID, err, d.KeyID)
				rep.add("drill: key re-enabled", false, "key %s is still Disabled: %v; run `encvol kms enable-key %s`", d.KeyID, err, d.KeyID)
			} else {
				d.ReEnabled = true
				log.Warn().Str("op", "drill").Msg("key re-enabled after a failed drill")
			}
		}
		d.TotalMS = ms(time.Since(start))
	}()
	fail := func(check, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		d.Error = msg
		rep.add(check, false, "%s", msg)
	}

	// A read before the disable must succeed and return the canary: the
	// drill then shows that this very data stops being served.
	if r := <-startRead(c.path); r.err != nil || sha256.Sum256(r.data) != c.sum {
		fail("drill: refuse I/O", "the canary does not read back before the drill: %v", r.err)
		return
	}

	t0 := time.Now()
	err := adm.DisableKey(ctx, keyRef)
	d.DisableCallMS = ms(time.Since(t0))
	if err != nil {
		if errors.Is(err, kmsclient.ErrAccessDenied) {
			fail("drill: refuse I/O", "this principal may not disable key %s (AccessDenied): the drill needs permission to disable and enable the key: %v", d.KeyID, err)
		} else {
			fail("drill: refuse I/O", "disable key %s: %v", d.KeyID, err)
		}
		return
	}
	disabled = true
	disabledAt := time.Now()
	log.Debug().Str("op", "drill").Msg("key disabled for the drill")

	// Phase 1: wait until the mount refuses to serve the canary.
	var pending <-chan readResult // a read blocked by a hang-mode gate
	for {
		if time.Since(disabledAt) > limit {
			fail("drill: refuse I/O", "the mount still served the canary %s after the key was disabled (key_check_interval %s)",
				time.Since(disabledAt).Round(time.Millisecond), opt.KeyCheckInterval)
			return
		}
		ch := startRead(c.path)
		d.ProbesClosing++
		var r readResult
		got := false
		select {
		case r = <-ch:
			got = true
		case <-time.After(blockedAfter):
		case <-ctx.Done():
			fail("drill: refuse I/O", "interrupted: %v", ctx.Err())
			return
		}
		if !got {
			// Blocked: that is how a hang-mode gate refuses. Latency is
			// counted to the start of the read that blocked.
			pending = ch
			d.CloseMS = ms(time.Now().Add(-blockedAfter).Sub(disabledAt))
			d.Refusal = "blocked (read waits for the key)"
			break
		}
		if r.err != nil {
			d.CloseMS = ms(r.end.Sub(disabledAt))
			d.Refusal = r.err.Error()
			break
		}
		if sha256.Sum256(r.data) != c.sum {
			fail("drill: refuse I/O", "the canary read back wrong while the key was being disabled (%d bytes)", len(r.data))
			return
		}
		if err := sleepCtx(ctx, opt.Poll); err != nil {
			fail("drill: refuse I/O", "interrupted: %v", err)
			return
		}
	}
	if opt.Status != nil {
		if st, err := opt.Status(ctx); err == nil {
			d.GateCause = st.GateCause
		}
	}
	closeLimit := opt.KeyCheckInterval + time.Second
	eioOK := pending != nil || strings.Contains(d.Refusal, "input/output error")
	rep.add("drill: refuse I/O", eioOK,
		"refused %.0f ms after disable-key (key_check_interval %s, want <= %s): %s", d.CloseMS, opt.KeyCheckInterval, closeLimit, d.Refusal)
	if d.CloseMS > ms(closeLimit) {
		rep.add("drill: close latency", false, "%.0f ms exceeds key_check_interval + 1 s = %s", d.CloseMS, closeLimit)
	}

	// Phase 2: a fresh mount must fail and say why.
	t1 := time.Now()
	ferr := opt.FreshMount(ctx)
	d.FreshMountMS = ms(time.Since(t1))
	if ferr == nil {
		rep.add("drill: fresh mount", false, "a fresh mount succeeded while the key was disabled")
	} else {
		d.FreshMount = ferr.Error()
		rep.add("drill: fresh mount", strings.Contains(d.FreshMount, "Disabled"),
			"refused in %.0f ms: %s", d.FreshMountMS, firstLine(d.FreshMount))
	}

	// Phase 3: enable and wait for I/O to come back without a remount.
	t2 := time.Now()
	err = adm.EnableKey(ctx, keyRef)
	d.EnableCallMS = ms(time.Since(t2))
	if err != nil {
		fail("drill: resume I/O", "enable key %s: %v", d.KeyID, err)
		return
	}
	d.ReEnabled = true
	enabledAt := time.Now()
	log.Debug().Str("op", "drill").Msg("key re-enabled")
	var data []byte
	for resumed := false; !resumed; {
		ch := pending
		if ch == nil {
			ch = startRead(c.path)
		}
		remaining := limit - time.Since(enabledAt)
		select {
		case r := <-ch:
			pending = nil
			if r.err == nil {
				data, resumed = r.data, true
				// Measured from the start of the enable call: the key is
				// enabled somewhere inside it, so a read blocked since the
				// gate closed can finish before the call returns.
				d.ReopenMS = ms(r.end.Sub(t2))
				continue
			}
			if time.Since(enabledAt) > limit {
				fail("drill: resume I/O", "reads still fail %s after enable-key: %v", time.Since(enabledAt).Round(time.Millisecond), r.err)
				return
			}
			if err := sleepCtx(ctx, opt.Poll); err != nil {
				fail("drill: resume I/O", "interrupted: %v", err)
				return
			}
		case <-time.After(max(remaining, 0)):
			fail("drill: resume I/O", "a read still blocks %s after enable-key", limit)
			return
		case <-ctx.Done():
			fail("drill: resume I/O", "interrupted: %v", ctx.Err())
			return
		}
	}
	rep.add("drill: resume I/O", true, "reads resumed %.0f ms after the enable-key call started, without a remount", d.ReopenMS)
	if opt.Status != nil {
		if st, err := opt.Status(ctx); err == nil {
			d.GateAfterOpen = st.Gate
		}
	}
	got := sha256.Sum256(data)
	d.CanaryIntact = got == c.sum
	rep.add("drill: canary intact", d.CanaryIntact, "sha256 %s of %d bytes read back, want %s", hex.EncodeToString(got[:8]), len(data), hex.EncodeToString(c.sum[:8]))
}
