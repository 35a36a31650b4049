package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/connopt/connopt/internal/netaddr"
)

// dnsCache keeps resolved names for a TTL, as fasthttp's TCPDialer does,
// rotates the address a dial starts with (so several A records share the
// load, as fasthttp does), and remembers addresses whose dial failed: they
// are tried last until one of them succeeds again or the TTL passes.
//
// When an entry expires, the first caller to see it resolves the name again
// while the others go on with the old addresses (fasthttp's TCPDialer
// does the same), so a busy name is not looked up by every caller at once.
// The cache holds at most maxDNSEntries names: when full, entries past
// their TTL are dropped, then any, so a stream of distinct names cannot
// grow it without bound.
type dnsCache struct {
	ttl time.Duration
	// lookup is the resolver; nil means net.DefaultResolver.LookupNetIP.
	lookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	mu          sync.Mutex
	entries     map[string]*dnsEntry
	failed      map[netip.Addr]time.Time // until when an address is tried last
}

// maxDNSEntries bounds the names a dialer's cache holds (fasthttp's
// TCPDialer drops entries two TTLs after resolving them, whatever their
// number).
const maxDNSEntries = 1024

type dnsEntry struct {
	addrs      []netip.Addr
	expires    time.Time
	next       int
	refreshing bool // a caller is resolving the name again
}

// resolve turns addr into the addresses to try, in order. IP literals cost
// nothing; names are resolved in the current namespace only.
func (d *Dialer) resolve(ctx context.Context, network, addr string) ([]netip.AddrPort, error) {
	if err := netaddr.CheckNetwork(network); err != nil {
		return nil, err
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if ap.Port() == 0 {
			return nil, &net.AddrError{Err: "missing port", Addr: addr}
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if _, err := netaddr.Fit(network, ap.Addr()); err != nil {
			return nil, err
		}
		return []netip.AddrPort{ap}, nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, &net.AddrError{Err: "want a numeric port", Addr: addr}
	}
	if d.cfg.Namespace != "" {
		return nil, fmt.Errorf("%w (%q in %s)", ErrNameInNamespace, host, d.cfg.Namespace)
	}
	ips, err := d.dns.lookup(ctx, network, host)
	if err != nil {
		return nil, err
	}
	aps := make([]netip.AddrPort, len(ips))
	for i, ip := range ips {
		aps[i] = netip.AddrPortFrom(ip, uint16(port))
	}
	return aps, nil
}

// lookup returns host's addresses for network: rotated by one per call,
// with the ones that failed recently moved to the end.
func (c *dnsCache) lookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	key := network + "/" + host
	now := time.Now()
	c.mu.Lock()
	e := c.entries[key]
	refresh := e == nil
	if e != nil && !now.Before(e.expires) && !e.refreshing {
		e.refreshing, refresh = true, true
	}
	c.mu.Unlock()
	if refresh {
		fresh, err := c.resolve(ctx, network, host)
		c.mu.Lock()
		if e != nil {
			e.refreshing = false
		}
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		e = &dnsEntry{addrs: fresh, expires: now.Add(c.ttl)}
		c.store(key, e, now)
		c.mu.Unlock()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(e.addrs)
	start := e.next % n
	e.next++
	out := make([]netip.Addr, 0, n)
	var last []netip.Addr
	for i := range n {
		ip := e.addrs[(start+i)%n]
		if until, ok := c.failed[ip]; ok && now.Before(until) {
			last = append(last, ip)
			continue
		}
		out = append(out, ip)
	}
	return append(out, last...), nil
}

// resolve asks the resolver for host's addresses on network.
func (c *dnsCache) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	lookup := c.lookupNetIP
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	addrs, err := lookup(ctx, netaddr.IPNetwork(network), host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

// store puts e in the cache, making room first if it is full. c.mu is
// held.
func (c *dnsCache) store(key string, e *dnsEntry, now time.Time) {
	if c.entries == nil {
		c.entries = map[string]*dnsEntry{}
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= maxDNSEntries {
		for k, old := range c.entries {
			if !now.Before(old.expires) && !old.refreshing {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < maxDNSEntries {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// result records the outcome of a dial to ip.
func (c *dnsCache) result(ip netip.Addr, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		delete(c.failed, ip)
		return
	}
	now := time.Now()
	if c.failed == nil {
		c.failed = map[netip.Addr]time.Time{}
	}
	if len(c.failed) >= 256 {
		for a, until := range c.failed {
			if !now.Before(until) {
				delete(c.failed, a)
			}
		}
	}
	c.failed[ip] = now.Add(c.ttl)
}
