// compose-check loads a Compose file with compose-go, the library Docker Compose
// itself uses, and fails on what Compose would refuse: unknown keys, wrong types, a
// depends_on naming a missing service. With -json it prints the loaded project (anchors
// merged, variables interpolated) as JSON, so a test can read each service's
// environment, ports and secrets exactly as Compose would run them.
//
// Usage: compose-check [-json] FILE
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	asJSON := flag.Bool("json", false, "print the loaded project as JSON")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-json] FILE")
		os.Exit(2)
	}
	file := flag.Arg(0)
	options, err := cli.NewProjectOptions([]string{file}, cli.WithOsEnv, cli.WithName("somagent"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *asJSON {
		out, err := json.Marshal(project)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(string(out))
		return
	}
	fmt.Printf("%s: %d services valid\n", file, len(project.Services))
}
