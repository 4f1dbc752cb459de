package fusefs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// dirCacheSize bounds the cached backing directory descriptors. A hit saves
// the walk from the root (one name encryption per level) and an open(2).
const dirCacheSize = 64

// dirCache keeps open descriptors of backing directories, keyed by node. A
// descriptor follows its directory through renames, so an entry never goes
// stale; an entry of a removed directory only yields ENOENT for new names,
// which is what the kernel expects of a deleted directory.
type dirCache struct {
	mu sync.Mutex
	m  map[*Node]*dirFD // GUARDED_BY(mu)
}

// dirFD is one cached descriptor. refs counts users; an evicted entry is
// closed by its last user.
type dirFD struct {
	fd      int
	path    string // backing path when opened (for log lines; may be stale)
	refs    int    // GUARDED_BY(dirCache.mu)
	evicted bool   // GUARDED_BY(dirCache.mu)
}

func (c *dirCache) get(n *Node) *dirFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[n]
	if e != nil {
		e.refs++
	}
	return e
}

// add caches a freshly opened descriptor and returns it with one reference.
// If another caller cached n meanwhile, fd is closed and theirs is used.
func (c *dirCache) add(n *Node, fd int, path string) *dirFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[*Node]*dirFD)
	}
	if e := c.m[n]; e != nil {
		unix.Close(fd)
		e.refs++
		return e
	}
	if len(c.m) >= dirCacheSize {
		// Evict some entries (map order is random enough for a cache this
		// small); those in use are closed by their last user.
		dropped := 0
		for k, e := range c.m {
			delete(c.m, k)
			c.evictLocked(e)
			if dropped++; dropped >= dirCacheSize/4 {
				break
			}
		}
	}
	e := &dirFD{fd: fd, path: path, refs: 1}
	c.m[n] = e
	cachedDirPaths.Store(fd, path)
	return e
}

// cachedDirPaths maps the descriptor numbers of cached directories to
// their backing paths, so realPath can name a /proc/self/fd path for a log
// line or error without a readlink (which cost one syscall per open).
// Descriptor numbers are process-wide, hence a package-level map.
var cachedDirPaths sync.Map // int → string

func closeDirFD(e *dirFD) {
	cachedDirPaths.CompareAndDelete(e.fd, e.path)
	unix.Close(e.fd)
}

func (c *dirCache) evictLocked(e *dirFD) {
	e.evicted = true
	if e.refs == 0 {
		closeDirFD(e)
	}
}

func (c *dirCache) release(e *dirFD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		closeDirFD(e)
	}
}

// drop forgets n's descriptor (its directory was removed or replaced).
func (c *dirCache) drop(n *Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[n]; e != nil {
		delete(c.m, n)
		c.evictLocked(e)
	}
}

// clear closes every unused descriptor (unmount).
func (c *dirCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		delete(c.m, k)
		c.evictLocked(e)
	}
}
