package server

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultRateLimit is the requests per second each principal may send on
// average. It is far above what volumes need (a mount checks its key every
// few seconds; the KMS benchmark offers 2,000 Decrypt/s from one principal)
// and keeps one principal from taking all of a small server: this one
// serves about 20,000 Decrypt/s on two cores.
const DefaultRateLimit = 5000

// principalRates is a token bucket per principal: a principal may send
// rate requests per second on average and up to one second's worth at
// once. Only authenticated requests take tokens, so nobody can spend
// another principal's budget by naming its access key.
type principalRates struct {
	limit rate.Limit
	burst int
	now   func() time.Time
	byKey sync.Map // principal name → *rate.Limiter
}

// newPrincipalRates returns a limiter of perSecond requests per second per
// principal, or nil (no limit) if perSecond is not positive.
func newPrincipalRates(perSecond float64, now func() time.Time) *principalRates {
	if perSecond <= 0 {
		return nil
	}
	return &principalRates{limit: rate.Limit(perSecond), burst: int(math.Ceil(perSecond)), now: now}
}

// allow takes one token from principal's bucket, or says why it cannot.
func (r *principalRates) allow(principal string) *apiError {
	if r == nil {
		return nil
	}
	lim, ok := r.byKey.Load(principal)
	if !ok {
		lim, _ = r.byKey.LoadOrStore(principal, rate.NewLimiter(r.limit, r.burst))
	}
	if lim.(*rate.Limiter).AllowN(r.now(), 1) {
		return nil
	}
	return errThrottling(fmt.Sprintf("Rate exceeded: principal %s sends more than %g requests per second, this server's limit per principal (kms serve --rate-limit); slow down and retry",
		principal, float64(r.limit)))
}
