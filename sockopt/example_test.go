package sockopt_test

import (
	"fmt"

	"github.com/connopt/connopt/sockopt"
)

func ExampleOptions() {
	var o sockopt.Options // what package net does
	fmt.Printf("%+v\n", o.KeepAliveConfig())

	o.KeepAlive = -1 // no keep-alive probes, as net.Dialer{KeepAlive: -1}
	fmt.Println(o.KeepAliveConfig().Enable)

	fmt.Println(sockopt.Options{ReadBuffer: -1}.Validate())
	// Output:
	// {Enable:true Idle:15s Interval:15s Count:9}
	// false
	// connopt: invalid Config: ReadBuffer is negative (-1)
}
