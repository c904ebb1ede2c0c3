// Command envoy validates Envoy bootstrap configurations against Envoy's own API: each is read as YAML,
// unmarshalled into go-control-plane's v3 Bootstrap (unknown fields and enum values fail) and checked with
// the generated ValidateAll (every field constraint of the protos: durations, ranges, required fields).
//
//	envoy BOOTSTRAP.yaml
//	envoy -configmap-key envoy.yaml [-dump FILE] MANIFESTS.yaml
//
// The second form finds the bootstrap in a ConfigMap of rendered manifests (`helm template`) under the given
// key, validates it and, with -dump, writes it to FILE (for a deliberately broken copy in a self-test).
//
// With -web-listener, each bootstrap is also held to the chart's protocols (protocols.go): that listener
// takes HTTP/1.1 and HTTP/2 (codec AUTO) and routes each of -web-paths to -web-cluster, and every other
// listener in front of a gRPC cluster takes HTTP/2 only.
//
//	envoy -web-listener query -web-cluster query -web-paths /console/,/hourglass.v1.QueryService/GetHourlyMetrics FILE
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	// The typed_config extensions the chart's bootstrap uses: protojson resolves an Any only through
	// registered types, so each must be linked in.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

func main() {
	key := flag.String("configmap-key", "", "validate the bootstrap each ConfigMap holds under this key")
	dump := flag.String("dump", "", "with -configmap-key: write the (single) bootstrap found to this file")
	webListener := flag.String("web-listener", "",
		"the listener that must take HTTP/1.1 besides HTTP/2 (codec AUTO); every other listener in front of a gRPC cluster must take HTTP/2 only")
	webCluster := flag.String("web-cluster", "", "with -web-listener: the cluster the web paths must be routed to")
	webPaths := flag.String("web-paths", "",
		"with -web-listener: comma-separated paths the web listener must route to -web-cluster")
	flag.Parse()
	var policy *webPolicy
	if *webListener != "" {
		if *webCluster == "" || *webPaths == "" {
			fmt.Fprintln(os.Stderr, "envoy: -web-listener needs -web-cluster and -web-paths")
			os.Exit(2)
		}
		policy = &webPolicy{listener: *webListener, cluster: *webCluster, paths: strings.Split(*webPaths, ",")}
	}
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: envoy [-configmap-key KEY [-dump FILE]] FILE")
		os.Exit(2)
	}
	path := flag.Arg(0)
	contents, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "envoy:", err)
		os.Exit(2)
	}
	bootstraps := map[string][]byte{path: contents}
	if *key != "" {
		bootstraps, err = fromConfigMaps(contents, *key)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
	}
	failed := false
	for name, bootstrap := range bootstraps {
		if err := validate(bootstrap, policy); err != nil {
			fmt.Fprintf(os.Stderr, "%s: invalid Envoy bootstrap: %v\n", name, err)
			failed = true
			continue
		}
		fmt.Printf("%s: valid Envoy bootstrap\n", name)
		if *dump != "" {
			if len(bootstraps) != 1 {
				fmt.Fprintln(os.Stderr, "envoy: -dump needs exactly one bootstrap")
				os.Exit(2)
			}
			if err := os.WriteFile(*dump, bootstrap, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "envoy:", err)
				os.Exit(2)
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}

func validate(bootstrapYAML []byte, policy *webPolicy) error {
	asJSON, err := yaml.YAMLToJSONStrict(bootstrapYAML)
	if err != nil {
		return err
	}
	var bootstrap bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(asJSON, &bootstrap); err != nil {
		return err
	}
	if err := bootstrap.ValidateAll(); err != nil {
		return err
	}
	if policy == nil {
		return nil
	}
	return checkProtocols(&bootstrap, *policy)
}

// fromConfigMaps returns the value under key of every ConfigMap in a manifest stream, named by ConfigMap.
func fromConfigMaps(manifests []byte, key string) (map[string][]byte, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	found := map[string][]byte{}
	for {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		var object struct {
			Kind     string                `json:"kind"`
			Metadata struct{ Name string } `json:"metadata"`
			Data     map[string]string     `json:"data"`
		}
		if err := yaml.Unmarshal(document, &object); err != nil {
			return nil, err
		}
		if value, ok := object.Data[key]; ok && object.Kind == "ConfigMap" {
			found["ConfigMap "+object.Metadata.Name+" "+key] = []byte(value)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no ConfigMap has a key %q", key)
	}
	return found, nil
}
