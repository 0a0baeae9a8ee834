// crashy dies the way the mode in its first argument says. Each mode's
// function is named after it, so tests can find it in the report's frames;
// the line that goes wrong is marked CRASH-LINE.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type server struct {
	sessions map[string]int
	next     *server
}

//go:noinline
func nilDeref(s *server) int {
	return s.next.sessions["x"] // CRASH-LINE
}

//go:noinline
func nilMapWrite(s *server) {
	s.sessions["alice"] = 1 // CRASH-LINE
}

//go:noinline
func indexOutOfRange(items []int, i int) int {
	return items[i] // CRASH-LINE
}

//go:noinline
func sendOnClosed(c chan int) {
	c <- 1 // CRASH-LINE
}

//go:noinline
func concurrentMapWrites() {
	m := map[int]int{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				m[i%64] = g // CRASH-LINE
			}
		}(g)
	}
	wg.Wait()
}

//go:noinline
func deadlock() {
	c := make(chan int)
	<-c // CRASH-LINE
}

//go:noinline
func recurse(n int) int {
	var pad [64]byte
	pad[n%64] = byte(n)
	return recurse(n+1) + int(pad[0]) // CRASH-LINE
}

//go:noinline
func outOfMemory() {
	limit := syscall.Rlimit{Cur: 1 << 30, Max: 1 << 30}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &limit); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(1)
	}
	var keep [][]byte
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 256<<20)) // CRASH-LINE
	}
	fmt.Println(len(keep))
}

//go:noinline
func divide(a, b int) int {
	return a / b // CRASH-LINE
}

//go:noinline
func unlockUnlocked() {
	var mu sync.Mutex
	mu.Unlock() // CRASH-LINE
}

//go:noinline
func loadConfig() {
	panic(errors.New("config missing: database url")) // CRASH-LINE
}

//go:noinline
func breakpoint() {
	runtime.Breakpoint() // CRASH-LINE
}

//go:noinline
func recoverOnce(s *server) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = true
		}
	}()
	_ = s.next.sessions
	return false
}

func main() {
	mode := os.Args[1]
	if len(os.Args) > 2 {
		// A delay first, for tests that must see the process running: a
		// number of milliseconds, or "stdin" to wait for a line there.
		if os.Args[2] == "stdin" {
			_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		} else {
			ms, _ := strconv.Atoi(os.Args[2])
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
	}
	switch mode {
	case "nil-deref":
		fmt.Println(nilDeref(&server{}))
	case "nil-map":
		nilMapWrite(&server{})
	case "index":
		fmt.Println(indexOutOfRange([]int{1, 2, 3}, len(os.Args)+4))
	case "closed-channel":
		c := make(chan int, 1)
		close(c)
		sendOnClosed(c)
	case "concurrent-map":
		concurrentMapWrites()
	case "deadlock":
		deadlock()
	case "stack-overflow":
		fmt.Println(recurse(0))
	case "out-of-memory":
		outOfMemory()
	case "divide":
		fmt.Println(divide(10, len(os.Getenv("CRASHY_UNSET_VARIABLE"))))
	case "fatal":
		unlockUnlocked()
	case "breakpoint":
		breakpoint()
	case "panic":
		loadConfig()
	case "recovered":
		n := 0
		for i := 0; i < 100; i++ {
			if recoverOnce(&server{}) {
				n++
			}
		}
		fmt.Println("recovered", n)
	case "wait":
		// Runs until killed.
		for {
			time.Sleep(time.Second)
		}
	default:
		// Status 2 and a usage line, as the flag package exits on bad
		// usage: a Go program's exit(2) that is not a crash.
		fmt.Fprintln(os.Stderr, "usage: crashy MODE [DELAY]: unknown mode", mode)
		os.Exit(2)
	}
}
