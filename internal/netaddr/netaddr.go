// Package netaddr is the one place connopt checks a network name and the
// family of an address against it, with the errors package net returns for
// the same mistakes (net.UnknownNetworkError, *net.AddrError), so that a
// caller switching from net sees the same error types and texts.
package netaddr

import (
	"net"
	"net/netip"
)

// CheckNetwork returns net.UnknownNetworkError for a network other than
// "tcp", "tcp4" and "tcp6".
func CheckNetwork(network string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return nil
	}
	return net.UnknownNetworkError(network)
}

// Fit checks that ip (unmapped) belongs to network's family, as net.Dial
// does: "tcp4" with an IPv6 address is net's *AddrError "no suitable
// address found". It returns the specific network, "tcp4" or "tcp6".
func Fit(network string, ip netip.Addr) (string, error) {
	if err := CheckNetwork(network); err != nil {
		return "", err
	}
	ip = ip.Unmap()
	if network == "tcp4" && !ip.Is4() || network == "tcp6" && !ip.Is6() {
		return "", &net.AddrError{Err: "no suitable address found", Addr: ip.String()}
	}
	if ip.Is4() {
		return "tcp4", nil
	}
	return "tcp6", nil
}

// IPNetwork is the network a resolver is asked for: "ip", "ip4" or "ip6".
func IPNetwork(network string) string {
	switch network {
	case "tcp4":
		return "ip4"
	case "tcp6":
		return "ip6"
	}
	return "ip"
}
