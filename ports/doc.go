// Package ports allocates local source ports for outbound TCP connections
// per destination, because a client that binds before it connects (to pick
// its source address) otherwise gets each port of ip_local_port_range once
// for all destinations, and the kernel's search for a free one slows down
// sharply as the range fills.
//
// A port only has to be unique per 4-tuple. Two strategies use that:
//
//   - Tracked (the default) keeps, per source address and destination, a pool
//     of ports in user space, binds with SO_REUSEADDR to an explicit port,
//     and retries with another port when something outside the allocator
//     holds it. A port our side closed ages for a few seconds before it is
//     handed out again (TIME_WAIT may still hold the 4-tuple); one the peer
//     closed first is reusable at once (Lease.Release with LocalClose or
//     PeerClose).
//   - Kernel sets IP_BIND_ADDRESS_NO_PORT so that bind fixes the address
//     only and connect picks a port per 4-tuple, and IP_LOCAL_PORT_RANGE
//     (Linux 6.3) to confine that socket to the configured range.
//
// Acquire and release are O(1) and safe for concurrent use; memory grows with
// the ports in use (and aging), not with destinations times the range.
//
// Linux only at run time: elsewhere New returns ErrUnsupported.
package ports
