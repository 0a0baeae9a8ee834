// goleak holds goroutines in known places, for `crashtrace goroutines`.
//
//	goleak hold N   N goroutines blocked in a channel send, created by
//	                main.fanOut; 6 waiting for a mutex; 3 asleep. Once they
//	                are parked it prints runtime.Stack(all), then "ready",
//	                and exits when its standard input closes.
//	goleak leak R   a server that leaks R goroutines a second, each blocked
//	                in a channel send in main.(*Server).reply, created by
//	                main.(*Server).handle; prints "ready" and runs until
//	                its standard input closes.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

var sink = make(chan int)
var mu sync.Mutex

//go:noinline
func worker(i int) {
	sink <- i
}

//go:noinline
func fanOut(n int) {
	for i := 0; i < n; i++ {
		go worker(i)
	}
}

//go:noinline
func lockWaiter() {
	mu.Lock()
	mu.Unlock()
}

//go:noinline
func sleeper() {
	time.Sleep(time.Hour)
}

// Server answers requests on a channel nobody reads: each request's
// goroutine blocks forever.
type Server struct {
	replies chan int
}

//go:noinline
func (s *Server) reply(i int) {
	s.replies <- i
}

//go:noinline
func (s *Server) handle(i int) {
	go s.reply(i)
}

func leak(rate int) {
	s := &Server{replies: make(chan int)}
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}()
	os.Stdout.WriteString("ready\n")
	for i := 0; ; i++ {
		for j := 0; j < rate/10; j++ {
			s.handle(i)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "hold" && os.Args[1] != "leak") {
		fmt.Fprintln(os.Stderr, "usage: goleak hold N | goleak leak RATE")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if os.Args[1] == "leak" {
		leak(n)
	}
	fanOut(n)
	mu.Lock()
	for i := 0; i < 6; i++ {
		go lockWaiter()
	}
	for i := 0; i < 3; i++ {
		go sleeper()
	}
	for runtime.NumGoroutine() < n+10 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if n <= 1000 {
		buf := make([]byte, 1<<20)
		os.Stdout.Write(buf[:runtime.Stack(buf, true)])
	}
	os.Stdout.WriteString("\nready\n")
	bufio.NewReader(os.Stdin).ReadString('\n')
}
