// Kills itself with SIGKILL from a known chain of Go calls, so that the
// dying thread's registers and stack are those of Go code in a system
// call: the report's frames must come back through main.die, main.serve
// and main.main to runtime.main, with no symbol table to help.
package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

func init() {
	// Keep the main goroutine on one thread from here to the kill.
	runtime.LockOSThread()
}

//go:noinline
func die(n int) int {
	fmt.Println("ready", n)
	// Thread-directed, so that the report is about this thread.
	syscall.Tgkill(os.Getpid(), syscall.Gettid(), syscall.SIGKILL) // CRASH-LINE
	return n
}

//go:noinline
func serve(n int) int {
	return die(n+1) * 2
}

func main() {
	os.Exit(serve(len(os.Args)))
}
