package batching

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/leakcheck"
)

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	// As large as net.core.rmem_max allows (about 416 KiB by default).
	c.SetReadBuffer(4 << 20)
	return c
}

// payload fills b with the datagram of sequence number seq: the number,
// then bytes derived from it, so any mix-up shows.
func payload(b []byte, seq uint64) {
	binary.BigEndian.PutUint64(b, seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq*31 + uint64(i))
	}
}

func mixedSize(seq uint64) int { return 8 + int(seq*7919%1400) } // 8 .. 1407 bytes, mixed

// gsoSize is 1,200 bytes, with every 50th datagram shorter: runs of equal
// sizes that GSO sends whole, ended by a short segment.
func gsoSize(seq uint64) int {
	if seq%50 == 49 {
		return 100
	}
	return 1200
}

// echo moves total datagrams of mixed sizes from a client Conn through an
// echo server Conn and back, at most window in flight so loopback's socket
// buffers never overflow, and checks every byte and the order.
func echo(t *testing.T, upgrade func(*net.UDPConn) Conn, total int, sizeOf func(uint64) int) (client, server Stats) {
	t.Helper()
	sc, cc := listenUDP(t), listenUDP(t)
	srv, cli := upgrade(sc), upgrade(cc)
	defer srv.Close()
	defer cli.Close()
	// Each datagram costs its truesize (payload plus about a kilobyte) in
	// the receiver's buffer: 128 in flight stay well inside it.
	const batch, window = 64, 128

	go func() { // the echo server
		msgs := make([]Message, batch)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 2048)
		}
		out := make([][]byte, 0, batch)
		for {
			n, err := srv.ReadBatch(msgs)
			if err != nil {
				return
			}
			out = out[:0]
			for _, m := range msgs[:n] {
				out = append(out, m.Buf[:m.N])
			}
			if err := srv.WriteBatch(out, msgs[0].Addr); err != nil {
				return
			}
		}
	}()

	dst := sc.LocalAddr().(*net.UDPAddr).AddrPort()
	sendBufs := make([][]byte, batch)
	for i := range sendBufs {
		sendBufs[i] = make([]byte, 2048)
	}
	recv := make([]Message, batch)
	for i := range recv {
		recv[i].Buf = make([]byte, 2048)
	}
	var sent, got uint64
	cc.SetReadDeadline(time.Now().Add(60 * time.Second))
	for got < uint64(total) {
		if sent < uint64(total) && sent-got+batch <= window {
			k := min(batch, total-int(sent))
			buffs := sendBufs[:k]
			for i := range buffs {
				seq := sent + uint64(i)
				buffs[i] = sendBufs[i][:sizeOf(seq)]
				payload(buffs[i], seq)
			}
			if err := cli.WriteBatch(buffs, dst); err != nil {
				t.Fatalf("write at %d: %v", sent, err)
			}
			sent += uint64(k)
			if sent-got+batch <= window {
				continue
			}
		}
		n, err := cli.ReadBatch(recv)
		if err != nil {
			t.Fatalf("read after %d of %d datagrams: %v", got, total, err)
		}
		want := make([]byte, 2048)
		for _, m := range recv[:n] {
			w := want[:sizeOf(got)]
			payload(w, got)
			if m.N != len(w) || string(m.Buf[:m.N]) != string(w) {
				t.Fatalf("datagram %d: %d bytes, seq %d; want %d bytes in order", got, m.N, binary.BigEndian.Uint64(m.Buf), len(w))
			}
			got++
		}
	}
	return cli.Stats(), srv.Stats()
}

func TestEchoMillion(t *testing.T) {
	total := 1_000_000
	if testing.Short() || raceEnabled {
		total = 100_000 // the race detector makes a million take minutes
	}
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	for _, tc := range []struct {
		name    string
		upgrade func(*net.UDPConn) Conn
		batched bool
		sizeOf  func(uint64) int
	}{
		{"batched", func(c *net.UDPConn) Conn { return tryUpgrade(c, 64, false) }, runtime.GOOS == "linux", mixedSize},
		{"batched-gso-gro", func(c *net.UDPConn) Conn { return TryUpgrade(c, 64) }, runtime.GOOS == "linux", mixedSize},
		{"batched-gso-runs", func(c *net.UDPConn) Conn { return TryUpgrade(c, 64) }, runtime.GOOS == "linux", gsoSize},
		{"fallback", func(c *net.UDPConn) Conn { return &singleConn{UDPConn: c} }, false, mixedSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.upgrade(listenUDP(t))
			if c.Batched() != tc.batched {
				t.Fatalf("Batched() = %v", c.Batched())
			}
			c.Close()
			start := time.Now()
			cs, ss := echo(t, tc.upgrade, total, tc.sizeOf)
			t.Logf("%d datagrams each way in %v; client: %d datagrams in %d writes, %d in %d reads; server: %d in %d reads",
				total, time.Since(start).Round(time.Millisecond), cs.WriteDatagrams, cs.WriteCalls, cs.ReadDatagrams, cs.ReadCalls, ss.ReadDatagrams, ss.ReadCalls)
			if cs.WriteDatagrams != uint64(total) || cs.ReadDatagrams != uint64(total) {
				t.Fatalf("counted %+v", cs)
			}
			if tc.name == "batched-gso-runs" && c.GSO() && c.GRO() && cs.ReadCalls >= cs.ReadDatagrams/64 {
				// GSO sends runs as one skb and GRO hands them over whole:
				// fewer receive syscalls than full recvmmsg batches.
				t.Fatalf("GSO+GRO: %d receive syscalls for %d datagrams", cs.ReadCalls, cs.ReadDatagrams)
			}
			if tc.batched && cs.WriteCalls*8 > cs.WriteDatagrams {
				t.Fatalf("batched writes averaged %.1f datagrams per call", float64(cs.WriteDatagrams)/float64(cs.WriteCalls))
			}
		})
	}
	leakcheck.Settle(t, fds, gs)
}

func TestClosed(t *testing.T) {
	c := TryUpgrade(listenUDP(t), 8)
	c.Close()
	if _, err := c.ReadBatch(make([]Message, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
	if err := c.WriteBatch([][]byte{{1}}, netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteBatch after Close: %v", err)
	}
	c2 := TryUpgrade(listenUDP(t), 8)
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c2.ReadBatch(make([]Message, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBatch past its deadline: %v", err)
	}
}

// A receiver that does not read while 2,000 datagrams arrive drops most of
// them; reads report how many (SO_RXQ_OVFL).
func TestDropsCounted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_RXQ_OVFL is Linux's")
	}
	rc := listenUDP(t)
	rc.SetReadBuffer(64 << 10)
	r := TryUpgrade(rc, 8)
	defer r.Close()
	s := TryUpgrade(listenUDP(t), 64)
	defer s.Close()
	dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	buffs := make([][]byte, 64)
	for i := range buffs {
		buffs[i] = make([]byte, 1000)
		buffs[i][0] = byte(i) // not one GSO run: each its own skb
		buffs[i] = buffs[i][:1000-i%2]
	}
	for range 2000 / 64 {
		if err := s.WriteBatch(buffs, dst); err != nil {
			t.Fatal(err)
		}
	}
	msgs := make([]Message, 8)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	drain := func() {
		for {
			rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := r.ReadBatch(msgs); err != nil {
				return
			}
		}
	}
	// The count rides on datagrams queued after the drops: make room, send
	// a few more, read them.
	drain()
	if err := s.WriteBatch(buffs[:4], dst); err != nil {
		t.Fatal(err)
	}
	drain()
	if d := r.Stats().Drops; d == 0 {
		t.Fatal("no drops reported after overflowing a 64 KiB receive buffer")
	} else {
		t.Logf("%d datagrams dropped", d)
	}
}
