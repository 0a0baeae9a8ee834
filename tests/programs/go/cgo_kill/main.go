// Kills itself with SIGKILL from C code called through cgo, so that the
// dying thread is in C on the thread's system stack: the report's frames
// must name the C functions (from DWARF) and reach the cgo boundary in the
// Go runtime, where the goroutine's own stack is elsewhere.
package main

/*
// No tail calls, so that every C function keeps its frame.
#cgo CFLAGS: -O0
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noinline)) static void c_die(int n) {
	printf("ready %d\n", n);
	fflush(stdout);
	syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGKILL); // CRASH-LINE
}

__attribute__((noinline)) static void c_entry(int n) {
	c_die(n + 1);
}
*/
import "C"

import (
	"os"
	"runtime"
)

func init() {
	runtime.LockOSThread()
}

//go:noinline
func callC(n int) {
	C.c_entry(C.int(n))
}

func main() {
	callC(len(os.Args))
}
