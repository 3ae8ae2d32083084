// random_data writes SIZE bytes of Go's seeded math/rand stream to stdout: the same bytes as the
// `random-data -size=SIZE -seed=SEED` tool that kubo's sharness tests (t0040-add-and-cat.sh) hash with
// `ipfs add`, so those tests' expected CIDs can check R1FS. Usage: go run random_data.go SIZE SEED
package main

import (
	"bufio"
	"io"
	"math/rand"
	"os"
	"strconv"
)

func main() {
	size, err1 := strconv.ParseInt(os.Args[1], 10, 64)
	seed, err2 := strconv.ParseInt(os.Args[2], 10, 64)
	if err1 != nil || err2 != nil {
		os.Stderr.WriteString("usage: random_data SIZE SEED\n")
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	if _, err := io.CopyN(w, rand.New(rand.NewSource(seed)), size); err != nil {
		os.Exit(1)
	}
}
