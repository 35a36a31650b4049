// Package batching reads and writes many UDP datagrams per syscall
// (recvmmsg and sendmmsg), for the UDP-heavy neighbours of an HTTP stack:
// DNS, metrics, QUIC-style transports. It is the idea of Tailscale's
// net/batching: TryUpgrade returns a Conn that batches where the platform
// can and loops single reads and writes where it cannot, and says which
// (Batched).
//
// On Linux it also uses UDP GSO (a run of equal-sized datagrams goes as one
// send with a UDP_SEGMENT control message; EIO turns it off) and UDP GRO
// (the kernel hands over coalesced datagrams, split here by the segment
// size it reports), and reports receive-queue drops (SO_RXQ_OVFL).
package batching
