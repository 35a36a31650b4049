package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// dnsCache keeps resolved names for a TTL, as fasthttp's TCPDialer does,
// and hands their addresses out round-robin.
type dnsCache struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]*dnsEntry
}

type dnsEntry struct {
	addrs   []netip.Addr
	expires time.Time
	next    int
}

// resolve turns addr into an IP and port. IP literals cost nothing; names
// are resolved in the current namespace only.
func (d *Dialer) resolve(ctx context.Context, network, addr string) (netip.AddrPort, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return netip.AddrPort{}, fmt.Errorf("client: unsupported network %q", network)
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("client: %q: port 0", addr)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		return ap, checkFamily(network, ap.Addr())
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("client: %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("client: %q: want a numeric port", addr)
	}
	if d.cfg.Namespace != "" {
		return netip.AddrPort{}, fmt.Errorf("%w (%q in %s)", ErrNameInNamespace, host, d.cfg.Namespace)
	}
	ip, err := d.dns.lookup(ctx, network, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func checkFamily(network string, ip netip.Addr) error {
	if network == "tcp4" && !ip.Is4() || network == "tcp6" && !ip.Is6() {
		return fmt.Errorf("client: address %v does not fit network %q", ip, network)
	}
	return nil
}

func (c *dnsCache) lookup(ctx context.Context, network, host string) (netip.Addr, error) {
	key := network + "/" + host
	now := time.Now()
	c.mu.Lock()
	if e := c.entries[key]; e != nil && now.Before(e.expires) {
		ip := e.addrs[e.next%len(e.addrs)]
		e.next++
		c.mu.Unlock()
		return ip, nil
	}
	c.mu.Unlock()

	ipNet := map[string]string{"tcp": "ip", "tcp4": "ip4", "tcp6": "ip6"}[network]
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return netip.Addr{}, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	if len(addrs) == 0 {
		return netip.Addr{}, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*dnsEntry{}
	}
	c.entries[key] = &dnsEntry{addrs: addrs, expires: now.Add(c.ttl), next: 1}
	c.mu.Unlock()
	return addrs[0], nil
}
