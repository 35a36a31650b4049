package main

import (
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/connopt/connopt/listener"
)

// The one-line change for a Fiber app: serve on connopt's listener.
func Example() {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Get("/", func(c *fiber.Ctx) error { return c.SendString("Hello, World!") })

	ln, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{}) // was: app.Listen(addr)
	if err != nil {
		log.Fatal(err)
	}
	go app.Listener(ln)
	defer app.Shutdown()

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 Hello, World!
}
