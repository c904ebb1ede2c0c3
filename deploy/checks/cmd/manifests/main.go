// Command manifests decodes every Kubernetes manifest of a YAML stream (what `helm template` prints) strictly
// into its API type: an unknown or misspelt field, a duplicate key, a wrong type or an unknown kind fails,
// where `kubectl apply` would only warn or drop the field. The kinds are client-go's built-in ones and
// prometheus-operator's monitoring.coreos.com/v1 (ServiceMonitor, PrometheusRule), which the chart renders
// when asked.
//
//	manifests FILE...   (or - for standard input)
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: manifests FILE... (- for standard input)")
		os.Exit(2)
	}
	decoder, err := strictDecoder()
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifests:", err)
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		kinds, err := checkFile(decoder, path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("%s: %s\n", path, summary(kinds))
	}
	if failed {
		os.Exit(1)
	}
}

func strictDecoder() (runtime.Decoder, error) {
	all := runtime.NewScheme()
	if err := scheme.AddToScheme(all); err != nil {
		return nil, err
	}
	if err := monitoringv1.AddToScheme(all); err != nil {
		return nil, err
	}
	return serializer.NewCodecFactory(all, serializer.EnableStrict).UniversalDeserializer(), nil
}

// checkFile decodes every document of one file; it fails on the first bad one, naming it.
func checkFile(decoder runtime.Decoder, path string) (map[string]int, error) {
	var input io.Reader = os.Stdin
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		input = file
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(input))
	kinds := map[string]int{}
	for index := 1; ; index++ {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", index, err)
		}
		if isEmpty(document) {
			continue
		}
		// Strict YAML first: a duplicate key, which the JSON decoder below would never see.
		asJSON, err := yaml.YAMLToJSONStrict(document)
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", index, source(document), err)
		}
		object, kind, err := decoder.Decode(asJSON, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", index, source(document), err)
		}
		if object == nil || kind == nil {
			return nil, fmt.Errorf("document %d (%s): decoded to nothing", index, source(document))
		}
		kinds[kind.Kind]++
	}
	if len(kinds) == 0 {
		return nil, errors.New("no manifest found")
	}
	return kinds, nil
}

// isEmpty is true for a document of comments and blank lines only (helm prints them between templates).
func isEmpty(document []byte) bool {
	for _, line := range bytes.Split(document, []byte("\n")) {
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) > 0 && trimmed[0] != '#' && !bytes.Equal(trimmed, []byte("---")) {
			return false
		}
	}
	return true
}

// source is helm's `# Source: chart/templates/x.yaml` line of a document, to name it in errors.
func source(document []byte) string {
	for _, line := range strings.Split(string(document), "\n") {
		if strings.HasPrefix(line, "# Source: ") {
			return strings.TrimPrefix(line, "# Source: ")
		}
	}
	return "no source line"
}

func summary(kinds map[string]int) string {
	names := make([]string, 0, len(kinds))
	total := 0
	for kind, count := range kinds {
		names = append(names, fmt.Sprintf("%d %s", count, kind))
		total += count
	}
	sort.Strings(names)
	return fmt.Sprintf("%d manifests decoded strictly (%s)", total, strings.Join(names, ", "))
}
