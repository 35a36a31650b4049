package batching_test

import (
	"fmt"
	"log"
	"net"

	"github.com/connopt/connopt/batching"
)

func ExampleTryUpgrade() {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Close()

	out := batching.TryUpgrade(tx, 64) // sendmmsg and UDP GSO on Linux, a loop elsewhere
	in := batching.TryUpgrade(rx, 64)  // recvmmsg and UDP GRO on Linux
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := out.WriteBatch([][]byte{[]byte("one"), []byte("two"), []byte("three")}, dst); err != nil {
		log.Fatal(err)
	}
	msgs := make([]batching.Message, 8)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 1500)
	}
	got := 0
	for got < 3 {
		n, err := in.ReadBatch(msgs[got:])
		if err != nil {
			log.Fatal(err)
		}
		got += n
	}
	for _, m := range msgs[:got] {
		fmt.Println(string(m.Buf[:m.N]))
	}
	// Output:
	// one
	// two
	// three
}
