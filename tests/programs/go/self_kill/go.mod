module example.com/self_kill

go 1.19
