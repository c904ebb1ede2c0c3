{{/* Envoy's bootstrap: one listener per service, each to a health-checked cluster of the service's
     headless DNS name. Numbers come from values.yaml (envoy:), where each is justified. */}}
{{- define "hourglass.envoyBootstrap" -}}
{{- $root := . -}}
{{- $e := .Values.envoy -}}
{{- $fullname := include "hourglass.fullname" . -}}
{{- $domain := printf "%s.svc.cluster.local" .Release.Namespace -}}
admin:
  # Loopback only: the admin API can stop Envoy. Prometheus reads /stats/prometheus through the `stats`
  # listener below, which exposes that one path.
  address:
    socket_address: {address: 127.0.0.1, port_value: 9901}
static_resources:
  listeners:
    {{- range $service := list "ingest" "query" }}
    {{- $port := ternary $e.service.ingestPort $e.service.queryPort (eq $service "ingest") }}
    - name: {{ $service }}
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ $port }}}
      per_connection_buffer_limit_bytes: {{ int64 $e.streamWindowBytes }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {{ $service }}
                {{- if eq $service "query" }}
                # gRPC clients speak HTTP/2 with prior knowledge (h2c), which AUTO tells from HTTP/1.1 by its
                # preface; a browser without TLS speaks HTTP/1.1 for the web console (/console/) and its
                # gRPC-Web calls. Envoy forwards both over HTTP/2 to the query pods, which answer gRPC-Web
                # themselves (tonic-web, over either version): no grpc_web filter here. TLS ends in front.
                codec_type: AUTO
                {{- else }}
                # gRPC clients speak HTTP/2 with prior knowledge (h2c); TLS ends in front of Envoy.
                codec_type: HTTP2
                {{- end }}
                http2_protocol_options:
                  # The collector's and query service's own --max-concurrent-streams.
                  max_concurrent_streams: 128
                  initial_stream_window_size: {{ int64 $e.streamWindowBytes }}
                  initial_connection_window_size: {{ int64 $e.connectionWindowBytes }}
                common_http_protocol_options:
                  max_connection_duration: {{ int64 $e.maxConnectionDurationSecs }}s
                drain_timeout: {{ int64 $e.drainTimeoutSecs }}s
                {{- if eq $service "ingest" }}
                # 30 s more than the collector's --idle-stream-timeout-secs, so the collector ends an idle
                # stream first, cleanly, with DEADLINE_EXCEEDED, and Envoy never resets one it would keep.
                stream_idle_timeout: {{ add (int64 (index $root.Values.collector.config "idle-stream-timeout-secs")) 30 }}s
                {{- end }}
                route_config:
                  name: {{ $service }}
                  virtual_hosts:
                    - name: {{ $service }}
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          route:
                            cluster: {{ $service }}
                            {{- if eq $service "ingest" }}
                            # An ingest stream lasts as long as its client sends: no route timeout. And no
                            # retry policy: a batch (streamed or IngestBatch) may have been acked before the
                            # failure, and only the client knows what it has not seen acked.
                            timeout: 0s
                            {{- else }}
                            timeout: {{ int64 $e.queryTimeoutSecs }}s
                            # Every query call is a unary read: retrying one that was refused or answered
                            # UNAVAILABLE (a replica shutting down, or not ready) changes nothing.
                            retry_policy:
                              retry_on: "unavailable,refused-stream,connect-failure"
                              num_retries: {{ $e.queryRetries }}
                              retry_host_predicate:
                                - name: envoy.retry_host_predicates.previous_hosts
                                  typed_config:
                                    "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                              host_selection_retry_max_attempts: 3
                              retry_back_off: {base_interval: 0.1s, max_interval: 1s}
                            {{- end }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    {{- end }}
    - name: stats
      address:
        socket_address: {address: 0.0.0.0, port_value: 9902}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: stats
                codec_type: AUTO
                route_config:
                  name: stats
                  virtual_hosts:
                    - name: stats
                      domains: ["*"]
                      routes:
                        - match: {path: /stats/prometheus}
                          route: {cluster: admin}
                        - match: {path: /ready}
                          route: {cluster: admin}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    {{- range $service := list "ingest" "query" }}
    {{- $component := ternary "collector" "query" (eq $service "ingest") }}
    {{- $port := ternary 50051 50052 (eq $service "ingest") }}
    - name: {{ $service }}
      # Every ready pod, from the headless Service's DNS (a terminating pod leaves it at once).
      type: STRICT_DNS
      dns_refresh_rate: 5s
      dns_lookup_family: V4_ONLY
      # The replica with the fewest active requests (streams count as requests): long ingest streams make
      # round robin uneven.
      lb_policy: LEAST_REQUEST
      connect_timeout: 1s
      per_connection_buffer_limit_bytes: {{ int64 $e.streamWindowBytes }}
      load_assignment:
        cluster_name: {{ $service }}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: {{ $fullname }}-{{ $component }}-headless.{{ $domain }}
                      port_value: {{ $port }}
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options:
              initial_stream_window_size: {{ int64 $e.streamWindowBytes }}
              initial_connection_window_size: {{ int64 $e.connectionWindowBytes }}
      health_checks:
        # The role's own gRPC health service: NOT_SERVING while its backends are unreachable and from the
        # first moment of its shutdown. Unhealthy after 2 failed checks 2 s apart: within 5 s, under the
        # roles' 5 s --shutdown-delay-ms.
        - timeout: 1s
          interval: 2s
          unhealthy_threshold: 2
          healthy_threshold: 1
          grpc_health_check:
            service_name: {{ ternary "hourglass.v1.IngestService" "hourglass.v1.QueryService" (eq $service "ingest") }}
      common_lb_config:
        # No panic mode: when every replica is unhealthy (Kafka down), calls fail fast with UNAVAILABLE
        # instead of being sent to replicas that would refuse them anyway.
        healthy_panic_threshold: {value: 0}
      outlier_detection:
        # Connection failures and resets (gateway errors), not gRPC statuses a client caused.
        consecutive_gateway_failure: 5
        enforcing_consecutive_gateway_failure: 100
        enforcing_consecutive_5xx: 0
        interval: 5s
        base_ejection_time: 30s
      circuit_breakers:
        thresholds:
          - max_requests: {{ int64 $e.maxRequests }}
            max_pending_requests: {{ int64 $e.maxRequests }}
            max_connections: {{ int64 $e.maxRequests }}
    {{- end }}
    - name: admin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: 9901}
{{- end -}}
