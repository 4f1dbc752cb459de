package fusefs

import "sync"

// nameCacheMax bounds the remembered names (about one large directory).
const nameCacheMax = 4096

// nameCache remembers the backing names Readdir has just decrypted, so the
// LOOKUP the kernel sends for every entry of a READDIRPLUS (ls -l, find,
// rm -r) need not encrypt the name again. Names are encrypted
// deterministically under the directory's ID, which never changes for a
// directory, so an entry cannot become wrong; a renamed or removed name
// just fails the stat that follows. Entries are dropped when used, when the
// cache is full, and when the key gate closes.
type nameCache struct {
	mu sync.Mutex
	m  map[nameKey]string // GUARDED_BY(mu)
}

type nameKey struct {
	dir  *Node
	name string
}

func (c *nameCache) put(dir *Node, name, backing string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[nameKey]string)
	}
	if len(c.m) >= nameCacheMax {
		clear(c.m)
	}
	c.m[nameKey{dir, name}] = backing
}

// take returns and forgets the backing name of name in dir.
func (c *nameCache) take(dir *Node, name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := nameKey{dir, name}
	b, ok := c.m[k]
	if ok {
		delete(c.m, k)
	}
	return b, ok
}

func (c *nameCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}
