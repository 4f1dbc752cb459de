package kms

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/encvol/encvol/keywrap"
)

// Store directory layout (mode 0700):
//
//	root.key    32 random bytes, 0600 (root-key mode), created on first use
//	kdf.json    Argon2id parameters and salt (passphrase mode)
//	keys.json   the whole key state, MAC'd; written atomically
//	serial      the save number of the newest keys.json, MAC'd: an older
//	            keys.json is refused (anti-rollback, see rollback.go)
//	lock        flock(2) target; its first 8 bytes are a random generation
//	            stamp that every writer replaces before publishing keys.json
//	lock.w      flock(2) turnstile that keeps readers from starving writers
//	audit.jsonl append-only audit log, 0600; rotated by size to
//	            audit.jsonl.1 (newest) ... audit.jsonl.N, made 0400
//	audit.lock  flock(2) target of audit log rotation and its readers
//
// Key material inside keys.json is sealed with AES-256-GCM under a seal key,
// and the state as a whole carries an HMAC-SHA256 under a MAC key; both are
// HKDF-SHA256 subkeys of the root secret (root.key content or the Argon2id
// output). The MAC means a wrong root key or passphrase is detected at Open,
// and that nobody can flip a key from Disabled to Enabled by editing the file
// without holding the root secret.
const (
	rootKeyFile   = "root.key"
	kdfFile       = "kdf.json"
	stateFile     = "keys.json"
	lockFileName  = "lock"
	turnstileName = "lock.w"
	auditFile     = "audit.jsonl"
	tmpPrefix     = ".tmp-"

	stateFormat = 1

	labelSeal     = "encvol kms v1 seal"
	labelStateMAC = "encvol kms v1 state-mac"
)

// Store is a key store directory. All methods are safe for concurrent use by
// goroutines of one process and by several processes sharing the directory:
// every call takes a flock on the lock file (shared for reads, exclusive for
// writes) and re-reads keys.json when another process changed it, so a
// DisableKey done anywhere is seen by the next call everywhere.
type Store struct {
	dir     string
	region  string
	account string
	now     func() time.Time

	seal   cipher.AEAD // seals key material at rest; nil after ForgetSealKey
	macKey []byte      // authenticates keys.json

	passphraseFile string // where the root secret comes from (RestoreSealKey)

	// rw orders goroutines of this process; flock orders processes. Both are
	// needed: flock alone gives the Go race detector no happens-before edge.
	rw sync.RWMutex

	// cacheMu guards st and gen. Readers under rw.RLock may replace st (after
	// another process wrote) but never mutate it; writers under rw.Lock
	// mutate st in place and publish it with save.
	cacheMu sync.Mutex
	st      *state
	gen     [8]byte

	audit  *auditLog
	checks *checkSummaries

	// idents are the principals and groups grants may name
	// (SetIdentities); nil: any principal, no group.
	idents atomic.Pointer[identities]

	fdMu     sync.Mutex
	fdPool   []*lockFDs // idle lock descriptors, see storeLock
	fdClosed bool

	closeOnce sync.Once
	closed    chan struct{}
}

// state is the content of keys.json.
type state struct {
	Keys    map[string]*keyRec   `json:"keys"`
	Aliases map[string]*aliasRec `json:"aliases"`
	// Identities are the regions and accounts the store was opened under
	// besides the default one (see identity.go).
	Identities []identity `json:"identities,omitempty"`
	// Serial numbers the saves of the state (rollback.go); 0 in stores
	// written before it existed.
	Serial uint64 `json:"serial,omitempty"`

	nextDue time.Time // earliest lazy event (deletion, rotation, expiry); zero = none
}

type stateFileJSON struct {
	Format int             `json:"format"`
	State  json.RawMessage `json:"state"`
	MAC    []byte          `json:"mac"`
}

// Open opens the key store in dir, creating the directory (0700), the root
// key (0600) or passphrase parameters, and an empty state on first use. It
// fails with a clear error when the root key or passphrase does not match
// the store.
func Open(dir string, opt Options) (_ *Store, retErr error) {
	if dir == "" {
		return nil, errors.New("kms: open store: empty directory path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kms: create store dir %s: %w", dir, err)
	}
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	s := &Store{
		dir:     dir,
		region:  opt.Region,
		account: opt.Account,
		now:     opt.Now,
		closed:  make(chan struct{}),
	}
	if s.region == "" {
		s.region = DefaultRegion
	}
	if s.account == "" {
		s.account = DefaultAccount
	}
	if err := CheckRegion(s.region); err != nil {
		return nil, fmt.Errorf("kms: open store %s: %w", dir, err)
	}
	if err := CheckAccount(s.account); err != nil {
		return nil, fmt.Errorf("kms: open store %s: %w", dir, err)
	}
	if s.now == nil {
		s.now = time.Now
	}
	lk, err := s.lockFile(true)
	if err != nil {
		return nil, err
	}
	defer func() {
		s.releaseFile(lk)
		if retErr != nil {
			s.closeFDs()
		}
	}()
	s.passphraseFile = opt.PassphraseFile
	// Derived under runtime/secret: the root secret's copies in the HKDF
	// state and the seal key schedule are erased once unreachable (after
	// ForgetSealKey, in a mount that only checks key states).
	keywrap.Secretly(func() {
		var secret []byte
		if secret, err = s.rootSecret(opt.PassphraseFile); err != nil {
			return
		}
		defer clear(secret)
		if s.macKey, err = hkdf.Key(sha256.New, secret, nil, labelStateMAC, 32); err != nil {
			err = fmt.Errorf("kms: derive state MAC key: %w", err)
			return
		}
		s.seal, err = sealCipher(secret)
	})
	if err != nil {
		return nil, err
	}
	s.removeStaleTemps()
	if _, err := os.Stat(filepath.Join(dir, stateFile)); errors.Is(err, fs.ErrNotExist) {
		st := &state{Keys: map[string]*keyRec{}, Aliases: map[string]*aliasRec{}}
		if err := s.save(lk, st); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("kms: stat %s: %w", filepath.Join(dir, stateFile), err)
	}
	st, err := s.current(lk)
	if err != nil {
		return nil, err
	}
	if s.recordIdentity(st) {
		if err := s.save(lk, st); err != nil {
			return nil, err
		}
	}
	if s.audit, err = openAuditLog(dir, opt, s.now); err != nil {
		return nil, err
	}
	s.checks = newCheckSummaries(opt.KeyCheckSummaryInterval)
	return s, nil
}

// Close writes the pending key check summaries and flushes the audit log.
// The Store must not be used afterwards.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		s.rw.Lock()
		defer s.rw.Unlock()
		if s.audit != nil {
			err = s.closeChecks()
			if cerr := s.audit.close(); err == nil {
				err = cerr
			}
		}
		s.closeFDs()
		clear(s.macKey)
	})
	return err
}

func (s *Store) closeFDs() {
	s.fdMu.Lock()
	for _, f := range s.fdPool {
		f.close()
	}
	s.fdPool, s.fdClosed = nil, true
	s.fdMu.Unlock()
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// rootSecret loads (or creates, under the exclusive lock) the secret the
// seal and MAC keys derive from.
func (s *Store) rootSecret(passphraseFile string) ([]byte, error) {
	rootPath, kdfPath := s.path(rootKeyFile), s.path(kdfFile)
	_, rootErr := os.Stat(rootPath)
	_, kdfErr := os.Stat(kdfPath)
	if passphraseFile != "" {
		if rootErr == nil {
			return nil, fmt.Errorf("kms: store %s is sealed with its root key file %s, not a passphrase; remove passphrase_file from the configuration", s.dir, rootPath)
		}
		return passphraseSecret(passphraseFile, kdfPath, errors.Is(kdfErr, fs.ErrNotExist))
	}
	if kdfErr == nil {
		return nil, fmt.Errorf("kms: store %s is sealed with a passphrase (%s exists); set passphrase_file", s.dir, kdfPath)
	}
	if errors.Is(rootErr, fs.ErrNotExist) {
		if _, err := os.Stat(s.path(stateFile)); err == nil {
			return nil, fmt.Errorf("kms: store %s has keys but its root key %s is missing; restore the root key file from backup", s.dir, rootPath)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("kms: generate root key: %w", err)
		}
		if err := writeFileAtomic(rootPath, key, 0o600); err != nil {
			return nil, fmt.Errorf("kms: write root key: %w", err)
		}
		return key, nil
	}
	fi, err := os.Stat(rootPath)
	if err != nil {
		return nil, fmt.Errorf("kms: stat root key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("kms: root key %s has mode %04o; it must not be readable by group or others (chmod 600)", rootPath, fi.Mode().Perm())
	}
	key, err := os.ReadFile(rootPath)
	if err != nil {
		return nil, fmt.Errorf("kms: read root key: %w", err)
	}
	if len(key) != 32 {
		clear(key)
		return nil, fmt.Errorf("kms: root key %s is %d bytes, want 32 (corrupt or wrong file)", rootPath, len(key))
	}
	return key, nil
}

// storeLock is one held cross-process lock. Two flock(2) files implement a
// writer-preferring readers/writer lock: "lock" is the lock proper (shared
// for reads, exclusive for writes) and "lock.w" is a turnstile. A writer
// holds the turnstile exclusively while it waits for and holds the lock; a
// reader passes the turnstile (shared, released at once) before taking the
// lock. So a steady stream of reads (a busy server) cannot starve a writer
// in another process (encvol kms disable-key), which plain flock would
// allow.
//
// flock locks belong to an open file description, so every operation needs
// descriptors of its own (one goroutine's unlock must not drop another's
// shared lock); they are pooled to avoid an open/close per call.
type storeLock struct {
	fds  *lockFDs
	excl bool
}

type lockFDs struct{ lock, turnstile *os.File }

const maxPooledLockFDs = 64

func (s *Store) getLockFDs() (*lockFDs, error) {
	s.fdMu.Lock()
	if n := len(s.fdPool); n > 0 {
		fds := s.fdPool[n-1]
		s.fdPool = s.fdPool[:n-1]
		s.fdMu.Unlock()
		return fds, nil
	}
	s.fdMu.Unlock()
	l, err := os.OpenFile(s.path(lockFileName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kms: open lock file: %w", err)
	}
	t, err := os.OpenFile(s.path(turnstileName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("kms: open lock file: %w", err)
	}
	return &lockFDs{lock: l, turnstile: t}, nil
}

func (s *Store) putLockFDs(fds *lockFDs) {
	s.fdMu.Lock()
	if len(s.fdPool) < maxPooledLockFDs && !s.fdClosed {
		s.fdPool = append(s.fdPool, fds)
		fds = nil
	}
	s.fdMu.Unlock()
	if fds != nil {
		fds.close()
	}
}

func (f *lockFDs) close() {
	f.lock.Close()
	f.turnstile.Close()
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("kms: flock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// lockFile takes the cross-process lock (not the in-process one).
func (s *Store) lockFile(excl bool) (*storeLock, error) {
	fds, err := s.getLockFDs()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*storeLock, error) {
		// Closing the descriptors drops whatever they hold.
		fds.close()
		return nil, err
	}
	if excl {
		if err := flock(fds.turnstile, unix.LOCK_EX); err != nil {
			return fail(err)
		}
		if err := flock(fds.lock, unix.LOCK_EX); err != nil {
			return fail(err)
		}
	} else {
		if err := flock(fds.turnstile, unix.LOCK_SH); err != nil {
			return fail(err)
		}
		if err := flock(fds.lock, unix.LOCK_SH); err != nil {
			return fail(err)
		}
		if err := flock(fds.turnstile, unix.LOCK_UN); err != nil {
			return fail(err)
		}
	}
	return &storeLock{fds: fds, excl: excl}, nil
}

func (s *Store) releaseFile(l *storeLock) {
	if err := flock(l.fds.lock, unix.LOCK_UN); err != nil {
		l.fds.close()
		return
	}
	if l.excl {
		if err := flock(l.fds.turnstile, unix.LOCK_UN); err != nil {
			l.fds.close()
			return
		}
	}
	s.putLockFDs(l.fds)
}

func (l *storeLock) readGen() ([8]byte, error) {
	var g [8]byte
	n, err := l.fds.lock.ReadAt(g[:], 0)
	if n == len(g) {
		return g, nil
	}
	if n == 0 {
		return g, nil // fresh lock file: all-zero generation
	}
	return g, fmt.Errorf("kms: read lock generation: %w", err)
}

// lock takes the in-process and the cross-process lock.
func (s *Store) lock(excl bool) (*storeLock, error) {
	select {
	case <-s.closed:
		return nil, newErr(CodeInternal, "key store %s is closed", s.dir)
	default:
	}
	if excl {
		s.rw.Lock()
	} else {
		s.rw.RLock()
	}
	lk, err := s.lockFile(excl)
	if err != nil {
		s.unlockRW(excl)
		return nil, internalErr("lock key store", err)
	}
	return lk, nil
}

func (s *Store) unlockRW(excl bool) {
	if excl {
		s.rw.Unlock()
	} else {
		s.rw.RUnlock()
	}
}

func (s *Store) unlock(lk *storeLock) {
	s.releaseFile(lk)
	s.unlockRW(lk.excl)
}

// current returns the up-to-date state, re-reading keys.json if another
// process published a new generation since this process last read it. The
// caller must hold lk and must not mutate the result unless lk is exclusive.
func (s *Store) current(lk *storeLock) (*state, error) {
	g, err := lk.readGen()
	if err != nil {
		return nil, internalErr("key store", err)
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.st != nil && g == s.gen {
		return s.st, nil
	}
	st, err := s.load()
	if err != nil {
		s.st = nil
		return nil, err
	}
	s.st, s.gen = st, g
	return st, nil
}

func (s *Store) load() (*state, error) {
	p := s.path(stateFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, internalErr("read key state", err)
	}
	var f stateFileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, internalErr("parse key state "+p, err)
	}
	if f.Format != stateFormat {
		return nil, newErr(CodeInternal, "key state %s has format %d; this encvol reads format %d", p, f.Format, stateFormat)
	}
	// The MAC covers the compact encoding json.Marshal produced.
	var compact bytes.Buffer
	if err := json.Compact(&compact, f.State); err != nil {
		return nil, internalErr("parse key state "+p, err)
	}
	if !hmac.Equal(f.MAC, s.stateMAC(compact.Bytes())) {
		return nil, newErr(CodeInternal, "key state %s does not authenticate: the root key or passphrase does not belong to this store, or the file was modified", p)
	}
	st := &state{}
	if err := json.Unmarshal(f.State, st); err != nil {
		return nil, internalErr("parse key state "+p, err)
	}
	if st.Keys == nil {
		st.Keys = map[string]*keyRec{}
	}
	if st.Aliases == nil {
		st.Aliases = map[string]*aliasRec{}
	}
	if err := s.checkSerial(st); err != nil {
		return nil, err
	}
	st.migrateAliases()
	st.computeDue()
	return st, nil
}

func (s *Store) stateMAC(raw []byte) []byte {
	m := hmac.New(sha256.New, s.macKey)
	m.Write([]byte("encvol kms state v1\x00"))
	m.Write(raw)
	return m.Sum(nil)
}

// save publishes st: temp file, fsync, new generation stamp, rename, fsync
// dir. A crash at any point leaves either the old or the new keys.json, both
// complete. The generation is bumped before the rename so that no reader can
// see the new file under the old stamp; a crash between the two only costs
// other processes one needless re-read.
func (s *Store) save(lk *storeLock, st *state) error {
	if !lk.excl {
		return newErr(CodeInternal, "internal error: state write without exclusive lock")
	}
	st.Serial++
	raw, err := json.Marshal(st)
	if err != nil {
		return internalErr("encode key state", err)
	}
	data, err := json.Marshal(stateFileJSON{Format: stateFormat, State: raw, MAC: s.stateMAC(raw)})
	if err != nil {
		return internalErr("encode key state", err)
	}
	var g [8]byte
	if _, err := rand.Read(g[:]); err != nil {
		return internalErr("generation stamp", err)
	}
	tmp, err := writeTemp(s.dir, data, 0o600)
	if err != nil {
		return internalErr("write key state", err)
	}
	if _, err := lk.fds.lock.WriteAt(g[:], 0); err != nil {
		os.Remove(tmp)
		return internalErr("write lock generation", err)
	}
	if err := os.Rename(tmp, s.path(stateFile)); err != nil {
		os.Remove(tmp)
		return internalErr("publish key state", err)
	}
	if err := syncDir(s.dir); err != nil {
		return internalErr("sync store dir", err)
	}
	if err := s.recordSerial(st.Serial); err != nil {
		return err
	}
	st.computeDue()
	s.cacheMu.Lock()
	s.st, s.gen = st, g
	s.cacheMu.Unlock()
	return nil
}

// removeStaleTemps deletes temp files a killed writer left behind. Only
// called under the exclusive lock, so no live writer owns them.
func (s *Store) removeStaleTemps() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.Remove(s.path(e.Name()))
		}
	}
}

func writeTemp(dir string, data []byte, perm os.FileMode) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	name := filepath.Join(dir, fmt.Sprintf("%s%d-%x", tmpPrefix, os.Getpid(), rnd))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(filepath.Dir(path), data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sealMaterial encrypts key material for storage; aad binds it to its key
// and purpose so sealed values cannot be moved between records. The caller
// holds the store lock (which orders it with ForgetSealKey).
func (s *Store) sealMaterial(plain []byte, aad string) ([]byte, error) {
	if s.seal == nil {
		return nil, errSealDropped
	}
	nonce := make([]byte, s.seal.NonceSize(), s.seal.NonceSize()+len(plain)+s.seal.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, internalErr("seal nonce", err)
	}
	return s.seal.Seal(nonce, nonce, plain, []byte(aad)), nil
}

func (s *Store) openMaterial(sealed []byte, aad string) ([]byte, error) {
	if s.seal == nil {
		return nil, errSealDropped
	}
	ns := s.seal.NonceSize()
	if len(sealed) < ns+s.seal.Overhead() {
		return nil, newErr(CodeInternal, "sealed key material too short (store corrupt)")
	}
	p, err := s.seal.Open(nil, sealed[:ns], sealed[ns:], []byte(aad))
	if err != nil {
		return nil, newErr(CodeInternal, "sealed key material does not authenticate (store corrupt)")
	}
	return p, nil
}

// read runs f with an up-to-date state under the shared lock. When lazy
// events (deletion date passed, rotation due, imported material expired)
// are due it first applies them under the exclusive lock.
func (s *Store) read(ctx context.Context, f func(st *state) error) error {
	if err := ctx.Err(); err != nil {
		return newErr(CodeInternal, "request cancelled: %v", err)
	}
	for try := range 3 {
		lk, err := s.lock(false)
		if err != nil {
			return err
		}
		st, err := s.current(lk)
		if err != nil {
			s.unlock(lk)
			return err
		}
		// A due event this process cannot apply (a rotation, without the
		// seal key: ForgetSealKey) stays due; the last try reads anyway,
		// as resolve already treats keys past their deletion date as gone.
		if st.isDue(s.now()) && try < 2 {
			s.unlock(lk)
			if err := s.write(ctx, func(*state, *storeLock) error { return errNoChange }); err != nil {
				return err
			}
			continue
		}
		err = f(st)
		s.unlock(lk)
		return err
	}
	return newErr(CodeInternal, "internal error: key store read loop ended")
}

// write runs f on the state under the exclusive lock and saves the state if
// f succeeds. f returns errNoChange when it changed nothing. f must not
// mutate st unless it returns nil: on error only the lazy events applied
// before f are saved.
func (s *Store) write(ctx context.Context, f func(st *state, lk *storeLock) error) error {
	if err := ctx.Err(); err != nil {
		return newErr(CodeInternal, "request cancelled: %v", err)
	}
	lk, err := s.lock(true)
	if err != nil {
		return err
	}
	defer s.unlock(lk)
	st, err := s.current(lk)
	if err != nil {
		return err
	}
	changed := s.applyDue(st)
	ferr := f(st, lk)
	switch {
	case ferr == errNoChange:
	case ferr != nil:
		// Lazy events already applied are still worth keeping.
		if changed {
			if err := s.save(lk, st); err != nil {
				s.dropCache()
			}
		}
		return ferr
	default:
		changed = true
	}
	if changed {
		if err := s.save(lk, st); err != nil {
			s.dropCache()
			return err
		}
	}
	return nil
}

func (s *Store) dropCache() {
	s.cacheMu.Lock()
	s.st = nil
	s.cacheMu.Unlock()
}

// errNoChange tells write that f changed nothing and no save is needed.
var errNoChange = errors.New("no change")
