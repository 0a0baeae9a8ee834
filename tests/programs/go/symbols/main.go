// Functions whose names, lines and inlining crashtrace must read from the
// pclntab of a stripped build, as `go tool addr2line` reads them from the
// unstripped one.
package main

import (
	"fmt"
	"os"
)

type Server struct{ n int }

//go:noinline
func (s *Server) handle(p *int) int {
	return *p + s.n
}

func add(a, b int) int {
	return a*b + len(os.Args) // INLINED-ADD
}

//go:noinline
func outer(x int) int {
	y := add(x, x) // CALLS-ADD
	return y * 3
}

func main() {
	s := &Server{n: len(os.Args)}
	n := 1
	fmt.Println(outer(s.handle(&n)))
}
