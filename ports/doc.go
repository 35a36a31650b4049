// Package ports allocates local source ports for outbound TCP connections,
// per remote address, so that a client that binds before it connects (to
// pick its source IP, or to go past the 28,232 ports of Linux's default
// ip_local_port_range) gets the whole range for every destination instead of
// once for all of them.
//
// bind(ip, 0) makes the kernel choose a port unique across all destinations,
// so the range caps the total number of connections, and the search slows
// down sharply as it fills. A port only has to be unique per 4-tuple. Two
// strategies use that:
//
//   - Tracked (the default) keeps, per source address and destination, a pool
//     of ports in user space, binds with SO_REUSEADDR to an explicit port,
//     and retries with another port when something outside the allocator
//     holds it. A port our side closed ages for a few seconds before it is
//     handed out again (TIME_WAIT may still hold the 4-tuple); one the peer
//     closed first is reusable at once. This is the Erlang porter library's
//     design: Lease.Release(LocalClose) and Release(PeerClose) are its
//     close/3 and on_closed/1.
//   - Kernel sets IP_BIND_ADDRESS_NO_PORT (Linux 4.2) so that bind fixes the
//     address only and connect picks a port per 4-tuple, and
//     IP_LOCAL_PORT_RANGE (Linux 6.3; 6.8 fixed its odd/even search) to
//     confine that socket to the configured range.
//
// Acquire and release are O(1) and safe for concurrent use; memory grows with
// the ports in use (and aging), not with destinations times the range.
//
// Linux only at run time: elsewhere New returns ErrUnsupported.
package ports
