package main

import (
	"testing"
	"time"

	fiberv3 "github.com/gofiber/fiber/v3"

	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/listener"
)

// Fiber v3 takes connopt's listener the same way (App.Listener): the same
// routes answer the same on it as on net.Listen, and it shuts down.
func TestFiberV3OnConnoptListener(t *testing.T) {
	ln, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{})
	if err != nil {
		t.Fatal(err)
	}
	app := fiberv3.New()
	app.Get("/", func(c fiberv3.Ctx) error { return c.SendString("Hello, World!") })
	done := make(chan error, 1)
	go func() { done <- app.Listener(ln, fiberv3.ListenConfig{DisableStartupMessage: true}) }()
	base := "http://" + ln.Addr().String()
	if code, body := testkit.Get(t, base+"/"); code != 200 || body != "Hello, World!" {
		t.Fatalf("/: %d %q", code, body)
	}
	if code, _ := testkit.Get(t, base+"/missing"); code != 404 {
		t.Fatalf("/missing: %d", code)
	}
	if err := app.ShutdownWithTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.Returns(t, done, 5*time.Second, "Fiber v3's Listener")
}
