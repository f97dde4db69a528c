package faultproxy_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"

	"github.com/tieredcache/tiered/internal/faultproxy"
)

// A proxy in front of an echo server holds what a client sends while it is
// frozen, and delivers it on Thaw.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	p, err := faultproxy.New(ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p.Freeze()
	io.WriteString(c, "hello")
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = c.Read(make([]byte, 5))
	fmt.Println("echoed while frozen:", !errors.Is(err, os.ErrDeadlineExceeded))

	p.Thaw()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Println("echoed after Thaw:", string(buf))

	p.Close() // closes both sides of the connection, so the echo ends
	<-echoed
	// Output:
	// echoed while frozen: false
	// echoed after Thaw: hello
}
