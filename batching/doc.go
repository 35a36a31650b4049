// Package batching reads and writes many UDP datagrams per syscall
// (recvmmsg and sendmmsg), for the UDP-heavy neighbours of an HTTP stack:
// DNS, metrics, QUIC-style transports. It is the idea of Tailscale's
// net/batching: TryUpgrade returns a Conn that batches where the platform
// can and loops single reads and writes where it cannot, and says which
// (Batched).
//
// UDP GSO and GRO (UDP_SEGMENT, UDP_GRO) are not used yet.
package batching
