package main

import "fmt"

// Version of the worker, not an IP address.
const Version = "1.21.7"

func main() {
	fmt.Println("worker started; report issues to dev-team@example.org")
	fmt.Println("timeout:", 30, "retries:", 5)
}
