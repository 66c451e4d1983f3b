// Command devicehub is the devicehub IoT hub: `devicehub serve` runs it with
// embedded defaults; the other subcommands talk to a running hub.
package main

import (
	"os"

	"github.com/devicehub/devicehub/internal/cli"
	"github.com/devicehub/devicehub/internal/hub"
)

func main() {
	root := cli.NewRoot(hub.Serve)
	if err := root.Execute(); err != nil {
		cli.PrintError(os.Stderr, err)
		os.Exit(cli.ExitCode(err))
	}
}
