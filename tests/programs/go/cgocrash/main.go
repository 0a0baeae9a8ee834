// cgocrash dies inside C code called from Go: a double free that glibc
// catches, or a NULL dereference.
package main

/*
#include <stdlib.h>

// The empty asm statements keep the calls from becoming tail calls, so
// each function keeps its frame.
static __attribute__((noinline)) void release(char *p) {
	free(p); // CRASH-LINE
	__asm__ volatile("");
}

static __attribute__((noinline)) void release_twice(int n) {
	char *volatile p = malloc(n);
	release(p);
	release(p);
	__asm__ volatile("");
}

static int read_null(int *p) {
	return *p; // CRASH-LINE
}
*/
import "C"

import (
	"fmt"
	"os"
)

//go:noinline
func releaseBuffer() {
	C.release_twice(64)
}

//go:noinline
func readNull() int {
	return int(C.read_null(nil))
}

func main() {
	switch os.Args[1] {
	case "double-free":
		releaseBuffer()
	case "null":
		fmt.Println(readNull())
	}
}
