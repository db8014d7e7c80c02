// kind-config-check loads a kind cluster config with kind's own loader (strict decoding, defaults,
// conversion) and validates it as `kind create cluster --config` does before it asks Docker for
// anything, then prints what a test checks: kind's own default node image, the node roles, images
// and labels, the pod and Service subnets.
// hack/tools.sh builds it inside a copy of kind's module, whose loader is an internal package.
//
//	kind-config-check FILE
package main

import (
	"fmt"
	"os"
	"sort"

	"sigs.k8s.io/kind/pkg/apis/config/defaults"
	"sigs.k8s.io/kind/pkg/internal/apis/config"
	"sigs.k8s.io/kind/pkg/internal/apis/config/encoding"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kind-config-check FILE")
		os.Exit(2)
	}
	cfg, err := encoding.Load(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: invalid: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	fmt.Printf("defaultImage %s\n", defaults.Image)
	fmt.Printf("name %s\n", cfg.Name)
	fmt.Printf("podSubnet %s\n", cfg.Networking.PodSubnet)
	fmt.Printf("serviceSubnet %s\n", cfg.Networking.ServiceSubnet)
	for _, node := range cfg.Nodes {
		fmt.Printf("node %s %s%s\n", node.Role, node.Image, labels(node))
	}
}

func labels(node config.Node) string {
	keys := make([]string, 0, len(node.Labels))
	for key := range node.Labels {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	out := ""
	for _, key := range keys {
		out += fmt.Sprintf(" %s=%s", key, node.Labels[key])
	}
	return out
}
