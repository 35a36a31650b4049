package reliability

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/ports"
	"github.com/connopt/connopt/server"
	"github.com/connopt/connopt/sockopt"
	"github.com/connopt/connopt/sockpool"
)

// Every constructor applies one rule: zero is the default, a negative value
// is rejected with the package's ErrInvalidConfig naming the field, and
// nothing is left open. (A negative MaxAcceptBackoff used to turn the
// EMFILE back-off into a busy loop.)
func TestInvalidConfigRejected(t *testing.T) {
	fds := leakcheck.FDs(t)
	h := func(*fasthttp.RequestCtx) {}
	for _, tc := range []struct {
		name, field string
		invalid     error
		try         func() error
	}{
		{"listener backoff", "MaxAcceptBackoff", listener.ErrInvalidConfig, func() error {
			_, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{MaxAcceptBackoff: -time.Second})
			return err
		}},
		{"listener keep-alive", "KeepAliveCount", listener.ErrInvalidConfig, func() error {
			_, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{Options: sockopt.Options{KeepAliveCount: -1}})
			return err
		}},
		{"listener shards", "shards", listener.ErrInvalidConfig, func() error {
			_, err := listener.ListenShards("tcp", "127.0.0.1:0", 0, listener.Config{})
			return err
		}},
		{"sockpool interval", "CheckInterval", sockpool.ErrInvalidConfig, func() error {
			_, err := sockpool.New(sockpool.Config{CheckInterval: -time.Second})
			return err
		}},
		{"client timeout", "ConnectTimeout", client.ErrInvalidConfig, func() error {
			_, err := client.NewDialer(client.Config{ConnectTimeout: -time.Second})
			return err
		}},
		{"client pool", "PoolSize", client.ErrInvalidConfig, func() error {
			_, err := client.NewDialer(client.Config{PoolSize: -1})
			return err
		}},
		{"ports attempts", "Attempts", ports.ErrInvalidConfig, func() error {
			_, err := ports.New(ports.Config{Attempts: -1})
			return err
		}},
		{"server timeout", "WriteTimeout", server.ErrInvalidConfig, func() error {
			_, err := server.New(h, server.Config{Addr: "127.0.0.1:0", WriteTimeout: -time.Second})
			return err
		}},
		{"server shards", "Shards", server.ErrInvalidConfig, func() error {
			_, err := server.New(h, server.Config{Addr: "127.0.0.1:0", Shards: -2})
			return err
		}},
		{"server handler", "handler", server.ErrInvalidConfig, func() error {
			_, err := server.New(nil, server.Config{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.try()
			if !errors.Is(err, tc.invalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("%v; want %v naming %s", err, tc.invalid, tc.field)
			}
		})
	}
	leakcheck.Settle(t, fds, -1)
}
