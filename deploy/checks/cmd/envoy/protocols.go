package main

// The protocols each listener accepts, beyond what ValidateAll can say: a listener in front of a gRPC cluster
// takes HTTP/2 only (gRPC clients speak h2c with prior knowledge), except the web listener, which must also
// take HTTP/1.1 (codec AUTO) and route the web paths to the web cluster, unchanged: browsers without TLS
// speak HTTP/1.1, for the query service's web console and its gRPC-Web calls.

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// webPolicy names the listener that must accept HTTP/1.1 besides HTTP/2, the cluster it must send the web
// paths to, and the paths (the console's page and a gRPC-Web method).
type webPolicy struct {
	listener string
	cluster  string
	paths    []string
}

// checkProtocols returns every breach of the policy in bootstrap: the web listener not AUTO or not routing a
// web path to the web cluster, and any other listener that routes to a gRPC cluster (one health-checked
// over gRPC) not HTTP/2 only.
func checkProtocols(bootstrap *bootstrapv3.Bootstrap, policy webPolicy) error {
	grpcClusters := map[string]bool{}
	for _, cluster := range bootstrap.GetStaticResources().GetClusters() {
		grpcClusters[cluster.GetName()] = healthCheckedOverGrpc(cluster)
	}
	if !grpcClusters[policy.cluster] {
		return fmt.Errorf("the web cluster %q is not a gRPC cluster of the bootstrap (a cluster with a gRPC health check)", policy.cluster)
	}
	var breaches []error
	foundWebListener := false
	for _, listener := range bootstrap.GetStaticResources().GetListeners() {
		managers, err := connectionManagers(listener)
		if err != nil {
			breaches = append(breaches, err)
			continue
		}
		if listener.GetName() == policy.listener {
			foundWebListener = true
			for _, manager := range managers {
				breaches = append(breaches, checkWebManager(listener.GetName(), manager, policy)...)
			}
			continue
		}
		for _, manager := range managers {
			clusters, err := routedClusters(listener.GetName(), manager)
			if err != nil {
				breaches = append(breaches, err)
				continue
			}
			for _, cluster := range clusters {
				if grpcClusters[cluster] && manager.GetCodecType() != hcmv3.HttpConnectionManager_HTTP2 {
					breaches = append(breaches, fmt.Errorf(
						"listener %s: codec_type %s, but it routes to the gRPC cluster %s: only the web listener %s takes HTTP/1.1, the others HTTP2",
						listener.GetName(), manager.GetCodecType(), cluster, policy.listener))
					break
				}
			}
		}
	}
	if !foundWebListener {
		breaches = append(breaches, fmt.Errorf("no listener named %q (the web listener)", policy.listener))
	}
	return errors.Join(breaches...)
}

func healthCheckedOverGrpc(cluster *clusterv3.Cluster) bool {
	for _, check := range cluster.GetHealthChecks() {
		if check.GetGrpcHealthCheck() != nil {
			return true
		}
	}
	return false
}

// connectionManagers decodes the HTTP connection managers of every filter chain of listener.
func connectionManagers(listener *listenerv3.Listener) ([]*hcmv3.HttpConnectionManager, error) {
	var managers []*hcmv3.HttpConnectionManager
	for _, chain := range listener.GetFilterChains() {
		for _, filter := range chain.GetFilters() {
			config := filter.GetTypedConfig()
			if config == nil || !config.MessageIs(&hcmv3.HttpConnectionManager{}) {
				continue
			}
			manager := &hcmv3.HttpConnectionManager{}
			if err := config.UnmarshalTo(manager); err != nil {
				return nil, fmt.Errorf("listener %s: %w", listener.GetName(), err)
			}
			managers = append(managers, manager)
		}
	}
	return managers, nil
}

// checkWebManager checks one connection manager of the web listener: AUTO, and each web path (a GET of the
// page, a POST of a gRPC-Web call: no route condition is evaluated, see routeFor) routed to the web cluster
// with its path unchanged, from every virtual host, one of which takes any host name.
func checkWebManager(listener string, manager *hcmv3.HttpConnectionManager, policy webPolicy) []error {
	var breaches []error
	if manager.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
		breaches = append(breaches, fmt.Errorf(
			"listener %s: codec_type %s refuses HTTP/1.1; the web listener needs AUTO (HTTP/1.1 and h2c)",
			listener, manager.GetCodecType()))
	}
	routes := manager.GetRouteConfig()
	if routes == nil {
		return append(breaches, fmt.Errorf("listener %s: no inline route_config to check (RDS or scoped routes)", listener))
	}
	anyHost := false
	for _, host := range routes.GetVirtualHosts() {
		for _, domain := range host.GetDomains() {
			anyHost = anyHost || domain == "*"
		}
		for _, path := range policy.paths {
			route, err := routeFor(host, path)
			if err != nil {
				breaches = append(breaches, fmt.Errorf("listener %s, virtual host %s: %w", listener, host.GetName(), err))
				continue
			}
			if err := checkForwardsTo(route, policy.cluster); err != nil {
				breaches = append(breaches, fmt.Errorf("listener %s, virtual host %s, %s: %w", listener, host.GetName(), path, err))
			}
		}
	}
	if !anyHost {
		breaches = append(breaches, fmt.Errorf("listener %s: no virtual host takes any host name (domains \"*\"), so a browser's Host may find no route", listener))
	}
	return breaches
}

// routeFor is the route Envoy picks for path in host: the first whose path matcher matches. A route with
// any other condition (headers, gRPC only, query parameters, ...) before it cannot be decided here and is
// reported rather than guessed, as is a host that matches with a matcher tree.
func routeFor(host *routev3.VirtualHost, path string) (*routev3.Route, error) {
	if host.GetMatcher() != nil {
		return nil, errors.New("routes by a matcher tree, which this check does not evaluate")
	}
	for index, route := range host.GetRoutes() {
		match := route.GetMatch()
		matched, err := pathMatches(match, path)
		if err != nil {
			return nil, fmt.Errorf("route %d: %w", index, err)
		}
		if !matched {
			continue
		}
		if condition := extraCondition(match); condition != "" {
			return nil, fmt.Errorf("route %d matches %s only under a condition this check does not evaluate (%s)", index, path, condition)
		}
		return route, nil
	}
	return nil, fmt.Errorf("no route matches %s (Envoy answers 404)", path)
}

// pathMatches follows Envoy's path specifiers for a path without a query string.
func pathMatches(match *routev3.RouteMatch, path string) (bool, error) {
	caseSensitive := match.GetCaseSensitive() == nil || match.GetCaseSensitive().GetValue()
	fold := func(text string) string {
		if caseSensitive {
			return text
		}
		return strings.ToLower(text)
	}
	switch specifier := match.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return strings.HasPrefix(fold(path), fold(specifier.Prefix)), nil
	case *routev3.RouteMatch_Path:
		return fold(path) == fold(specifier.Path), nil
	case *routev3.RouteMatch_PathSeparatedPrefix:
		prefix := fold(specifier.PathSeparatedPrefix)
		return fold(path) == prefix || strings.HasPrefix(fold(path), prefix+"/"), nil
	case *routev3.RouteMatch_SafeRegex:
		// RE2 in both Envoy and Go; Envoy matches the whole path.
		pattern, err := regexp.Compile(`^(?:` + specifier.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return false, err
		}
		return pattern.MatchString(path), nil
	case *routev3.RouteMatch_ConnectMatcher_:
		return false, nil // CONNECT requests only
	default:
		return false, fmt.Errorf("a path matcher this check does not evaluate (%T)", specifier)
	}
}

// extraCondition names the first field of match set besides the path and its case, or "" if none is.
func extraCondition(match *routev3.RouteMatch) string {
	condition := ""
	match.ProtoReflect().Range(func(field protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if field.ContainingOneof() != nil && field.ContainingOneof().Name() == "path_specifier" {
			return true
		}
		if field.Name() == "case_sensitive" {
			return true
		}
		condition = string(field.Name())
		return false
	})
	return condition
}

// checkForwardsTo says whether route forwards to cluster alone, with the path the browser asked for.
func checkForwardsTo(route *routev3.Route, cluster string) error {
	action := route.GetRoute()
	if action == nil {
		return fmt.Errorf("route %q does not forward (a redirect, direct response or other action)", route.GetName())
	}
	if action.GetCluster() != cluster {
		target := action.GetCluster()
		if target == "" {
			target = "a cluster picked per request"
		}
		return fmt.Errorf("routed to %s, not to the cluster %s", target, cluster)
	}
	if action.GetPrefixRewrite() != "" || action.GetRegexRewrite() != nil || action.GetPathRewritePolicy() != nil ||
		action.GetPathRewrite() != "" {
		return errors.New("the route rewrites the path, which the service serves as asked")
	}
	return nil
}

// routedClusters lists the clusters the inline routes of manager forward to, by name or by weight.
func routedClusters(listener string, manager *hcmv3.HttpConnectionManager) ([]string, error) {
	routes := manager.GetRouteConfig()
	if routes == nil {
		return nil, fmt.Errorf("listener %s: no inline route_config to check (RDS or scoped routes)", listener)
	}
	var clusters []string
	for _, host := range routes.GetVirtualHosts() {
		for _, route := range host.GetRoutes() {
			action := route.GetRoute()
			if action.GetCluster() != "" {
				clusters = append(clusters, action.GetCluster())
			}
			for _, weighted := range action.GetWeightedClusters().GetClusters() {
				clusters = append(clusters, weighted.GetName())
			}
		}
	}
	return clusters, nil
}
