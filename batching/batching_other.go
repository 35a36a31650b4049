//go:build !linux

package batching

import "net"

// Outside Linux there is no recvmmsg/sendmmsg path: TryUpgrade falls back.
func upgrade(conn *net.UDPConn, batchSize int, offload bool) Conn { return nil }
