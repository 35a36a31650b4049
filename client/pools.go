package client

import (
	"errors"
	"sync"

	"github.com/connopt/connopt/sockpool"
)

// sharedPool is a socket pool for another namespace, shared by every
// Dialer of the process that asks for the same sockpool.Config (namespace,
// family, options, size): N dialers into one namespace cost one locked OS
// thread, not N.
type sharedPool struct {
	cfg     sockpool.Config
	pool    *sockpool.Pool
	private bool // not in the registry: see newPrivatePool
	refs    int  // under registry.mu
}

// registry holds the shared pools by Config. Pools are built outside its
// lock (a pool's first batch needs a setns and a hundred syscalls); a
// second Dialer asking for one being built waits for it.
var registry struct {
	mu    sync.Mutex
	pools map[sockpool.Config]*registryEntry
}

type registryEntry struct {
	ready chan struct{} // closed once sp or err is set
	sp    *sharedPool
	err   error
}

// namespaceDied says whether a pool's error means its namespace's name no
// longer leads to the namespace it was made for: a new pool, for whatever
// the name leads to now, may serve.
func namespaceDied(err error) bool {
	return errors.Is(err, sockpool.ErrNamespaceGone) || errors.Is(err, sockpool.ErrNamespaceChanged)
}

// acquirePool returns the shared pool of cfg, with a reference the caller
// gives back with releasePool. A registered pool whose namespace died is
// replaced.
func acquirePool(cfg sockpool.Config) (*sharedPool, error) {
	registry.mu.Lock()
	for {
		if registry.pools == nil {
			registry.pools = map[sockpool.Config]*registryEntry{}
		}
		e := registry.pools[cfg]
		if e == nil {
			e = &registryEntry{ready: make(chan struct{})}
			registry.pools[cfg] = e
			registry.mu.Unlock()
			p, err := sockpool.New(cfg)
			registry.mu.Lock()
			if err != nil {
				delete(registry.pools, cfg)
				e.err = err
			} else {
				e.sp = &sharedPool{cfg: cfg, pool: p, refs: 1}
			}
			close(e.ready)
			registry.mu.Unlock()
			return e.sp, err
		}
		if e.sp == nil {
			registry.mu.Unlock()
			<-e.ready
			registry.mu.Lock()
			if e.err != nil {
				registry.mu.Unlock()
				return nil, e.err
			}
			continue // look again: it may have died or been released since
		}
		if namespaceDied(e.sp.pool.Err()) {
			// Its users still hold it (and release it): only the
			// registry forgets it.
			delete(registry.pools, cfg)
			continue
		}
		e.sp.refs++
		registry.mu.Unlock()
		return e.sp, nil
	}
}

// newPrivatePool is a pool no other Dialer shares: for a Dialer made on a
// thread that a goroutine has moved into another namespace with Namespace
// "", which names that thread's namespace and nothing a registry could
// match.
func newPrivatePool(cfg sockpool.Config) (*sharedPool, error) {
	p, err := sockpool.New(cfg)
	if err != nil {
		return nil, err
	}
	return &sharedPool{cfg: cfg, pool: p, private: true, refs: 1}, nil
}

// releasePool gives back a reference; the last one closes the pool.
func releasePool(sp *sharedPool) {
	registry.mu.Lock()
	sp.refs--
	last := sp.refs == 0
	if last && !sp.private {
		if e := registry.pools[sp.cfg]; e != nil && e.sp == sp {
			delete(registry.pools, sp.cfg)
		}
	}
	registry.mu.Unlock()
	if last {
		sp.pool.Close()
	}
}
