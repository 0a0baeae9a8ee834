module example.com/cgo_kill

go 1.19
