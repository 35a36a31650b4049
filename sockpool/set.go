package sockpool

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Set keeps one Pool per namespace, created on first use with a shared
// Config. It is safe for concurrent use.
type Set struct {
	cfg    Config
	mu     sync.Mutex
	pools  map[string]*Pool
	closed bool
}

// NewSet returns an empty Set; cfg.Namespace is ignored.
func NewSet(cfg Config) *Set { return &Set{cfg: cfg, pools: map[string]*Pool{}} }

// Pool returns the pool of namespace ns ("" for the caller's), creating it
// on first use. A pool whose namespace is gone or replaced (and not
// reopened) is replaced by a new one for whatever ns leads to now.
func (s *Set) Pool(ns string) (*Pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if p := s.pools[ns]; p != nil {
		if p.Err() == nil {
			return p, nil
		}
		p.Close()
		delete(s.pools, ns)
	}
	cfg := s.cfg
	cfg.Namespace = ns
	p, err := New(cfg)
	if err != nil {
		return nil, err
	}
	s.pools[ns] = p
	return p, nil
}

// Get returns a socket from the pool of namespace ns.
func (s *Set) Get(ctx context.Context, ns string) (*Socket, error) {
	p, err := s.Pool(ns)
	if err != nil {
		return nil, err
	}
	return p.Get(ctx)
}

// Close closes every pool.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ns, p := range s.pools {
		p.Close()
		delete(s.pools, ns)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (s *Set) Describe(ch chan<- *prometheus.Desc) { Describe(ch) }

// Collect implements prometheus.Collector: every pool's series, labelled by
// namespace.
func (s *Set) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	pools := make([]*Pool, 0, len(s.pools))
	for _, p := range s.pools {
		pools = append(pools, p)
	}
	s.mu.Unlock()
	for _, p := range pools {
		p.Collect(ch)
	}
}
