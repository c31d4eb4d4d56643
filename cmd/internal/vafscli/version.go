package vafscli

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

// VersionCmd is `vafs version`; name is the binary's ("vafs", "vafsd"),
// so that the two can be told apart when their versions differ.
func VersionCmd(name string) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Printf("%s %s (%s, %s/%s)\n", name, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
