// 100,000 nil pointer dereferences, each turned into a panic by the Go
// runtime's SIGSEGV handler and recovered: the cost of recovered panics
// (and of the runtime probes in a Go executable that never dies).
package main

import "fmt"

type node struct{ next *node }

//go:noinline
func deref(n *node) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = true
		}
	}()
	_ = n.next.next
	return false
}

func main() {
	recovered := 0
	for i := 0; i < 100000; i++ {
		if deref(&node{}) {
			recovered++
		}
	}
	fmt.Println("recovered", recovered)
}
