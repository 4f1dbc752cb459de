package server

import (
	"container/heap"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// DefaultMaxReplayEntries is how many signatures of state-changing requests
// the server remembers per principal (about 150 bytes each). A principal
// that reaches it within one skew window is throttled until the oldest
// signatures expire.
const DefaultMaxReplayEntries = 10000

// repeatableOps may be sent again with the same signature, as AWS KMS
// allows: they change nothing a repeat could undo or redo (a mount's key
// check and the benchmark's load generator repeat Decrypt). Every other
// operation, including any added later, is state-changing.
var repeatableOps = map[string]bool{
	"Decrypt": true, "Encrypt": true, "ReEncrypt": true, "GenerateDataKey": true,
	"GenerateDataKeyWithoutPlaintext": true, "GenerateRandom": true, "DescribeKey": true,
	"ListKeys": true, "ListAliases": true, "ListGrants": true, "ListRetirableGrants": true,
	"ListKeyPolicies": true, "ListResourceTags": true, "ListKeyRotations": true,
	"GetKeyPolicy": true, "GetKeyRotationStatus": true,
}

// replayGuard refuses a second use of the signature of a state-changing
// request. A signature is accepted only while its X-Amz-Date is within the
// skew window, so it is remembered until then and forgotten after: memory
// is bounded by the window, and by limit per principal. When a principal's
// set is full the request is throttled rather than an entry forgotten
// early, which would reopen the replay.
type replayGuard struct {
	window time.Duration
	limit  int

	mu   sync.Mutex
	seen map[string]*signatureSet // by principal name
}

func newReplayGuard(window time.Duration, limit int) *replayGuard {
	return &replayGuard{window: window, limit: limit, seen: map[string]*signatureSet{}}
}

// admit records signature, made at signedAt by principal for op, or
// refuses it if it was used before.
func (g *replayGuard) admit(principal, op, signature string, signedAt, now time.Time) *apiError {
	g.mu.Lock()
	defer g.mu.Unlock()
	set := g.seen[principal]
	if set == nil {
		set = &signatureSet{ops: map[string]string{}}
		g.seen[principal] = set
	}
	set.expire(now)
	if first, ok := set.ops[signature]; ok {
		return errInvalidSignature(fmt.Sprintf("this signature was already used by a %s request: a signed state-changing request is accepted once; sign a new request (AWS SDKs and awscli sign every attempt afresh, but the same request sent again within the same second carries the same signature: retry after a second)", first))
	}
	if len(set.ops) >= g.limit {
		return errThrottling(fmt.Sprintf("Rate exceeded: principal %s has %d state-changing requests signed within the %s clock-skew window, the most this server remembers to refuse replays; retry once older ones leave the window",
			principal, len(set.ops), g.window))
	}
	set.ops[signature] = op
	heap.Push(&set.byExpiry, signatureExpiry{sig: signature, at: signedAt.Add(g.window)})
	return nil
}

// signatureSet is one principal's remembered signatures, with the operation
// each was first used for, and a heap of their expiry times.
type signatureSet struct {
	ops      map[string]string
	byExpiry expiryHeap
}

// expire forgets the signatures the skew window no longer accepts.
func (s *signatureSet) expire(now time.Time) {
	for len(s.byExpiry) > 0 && s.byExpiry[0].at.Before(now) {
		delete(s.ops, heap.Pop(&s.byExpiry).(signatureExpiry).sig)
	}
}

type signatureExpiry struct {
	sig string
	at  time.Time
}

type expiryHeap []signatureExpiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(signatureExpiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func errThrottling(msg string) *apiError {
	return &apiError{Code: "ThrottlingException", Status: http.StatusBadRequest, Message: msg}
}
