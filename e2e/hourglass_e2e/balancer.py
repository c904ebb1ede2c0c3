"""The balancer: haproxy's configuration, generated from the Envoy bootstrap the Helm chart renders.

The chart's Envoy (charts/hourglass/templates/_envoy.tpl) is what production runs in front of the
collectors and query services; Envoy cannot be installed here, Debian's haproxy 2.6 can, and it balances
gRPC over HTTP/2 (``proto h2``) per call as Envoy does. So the e2e balancer is not written by hand: every
setting of the rendered bootstrap is read here and either becomes its haproxy equivalent (routes,
timeouts, retries, health checks, balancing, limits) or is named with the reason it has none. A setting
this module does not know fails the run: a change to the chart's Envoy config cannot go unseen by e2e.

Health checks are gRPC health checks of the service, as Envoy's ``grpc_health_check`` (haproxy has no
native gRPC check; ``grpc-health-probe`` runs as its external check, with the same timeout).
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import yaml


class EnvoyConfigError(Exception):
    """The chart's Envoy bootstrap has something this translation does not know."""


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(duration))
    if not match:
        raise EnvoyConfigError(f"not an Envoy duration: {duration!r}")
    return float(match.group(1))


def _ms(duration: str) -> str:
    """An Envoy duration as haproxy's, in milliseconds."""
    return f"{int(round(_seconds(duration) * 1000))}ms"


class _Reader:
    """Remembers every leaf of a parsed bootstrap that was read, or set aside with a reason, so that the
    leaves nobody looked at can be reported."""

    def __init__(self, document: Any):
        self.document = document
        self.used: Set[str] = set()
        self.unmapped: List[Tuple[str, str]] = []

    def root(self) -> "_Node":
        return _Node(self, self.document, "")

    def mark(self, path: str, value: Any) -> None:
        for leaf, _ in _leaves(value, path):
            self.used.add(leaf)

    def unread(self) -> List[str]:
        return sorted(leaf for leaf, _ in _leaves(self.document, "") if leaf not in self.used)


class _Node:
    """A dict or list of the bootstrap. Reading a scalar (or a list of scalars) marks it read; a dict or
    a list of dicts comes back as another node, whose leaves must be read in their turn."""

    def __init__(self, reader: _Reader, value: Any, path: str):
        self.reader, self.value, self.path = reader, value, path

    def _wrap(self, value: Any, path: str) -> Any:
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value)):
            return _Node(self.reader, value, path)
        self.reader.mark(path, value)
        return value

    def __getitem__(self, key: Any) -> Any:
        if isinstance(self.value, list):
            return self._wrap(self.value[key], f"{self.path}[{key}]")
        if key not in self.value:
            raise EnvoyConfigError(f"{self.path}.{key} is missing from the chart's Envoy bootstrap")
        return self._wrap(self.value[key], f"{self.path}.{key}")

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.value else default

    def __contains__(self, key: str) -> bool:
        return key in self.value

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        for index in range(len(self.value)):
            yield self[index]

    def whole(self) -> Any:
        """The raw value, all of it marked read (for values compared whole)."""
        self.reader.mark(self.path, self.value)
        return self.value

    def aside(self, key: str, reason: str) -> None:
        """Marks ``key`` (all of it) as deliberately not mapped, for ``reason``."""
        if key in self.value:
            self.reader.mark(f"{self.path}.{key}", self.value[key])
            self.reader.unmapped.append((f"{self.path}.{key}".lstrip("."), reason))


def _leaves(value: Any, path: str):
    if isinstance(value, dict):
        if not value:
            yield path, value
        for key, child in value.items():
            yield from _leaves(child, f"{path}.{key}")
    elif isinstance(value, list):
        if not value:
            yield path, value
        for index, child in enumerate(value):
            yield from _leaves(child, f"{path}[{index}]")
    else:
        yield path, value


@dataclass
class ServicePlan:
    """What one Envoy listener and its cluster become in haproxy."""

    name: str
    health_service: str
    # frontend
    # HTTP/1.1 besides h2c (Envoy's codec AUTO: the query listener, for the web console), else h2c only.
    accept_http1: bool
    client_timeout: str
    # backend
    balance: str
    connect_timeout: str
    server_timeout: str
    retries: int
    retry_on: str
    redispatch: bool
    check_inter: str
    check_timeout: str
    check_fall: int
    check_rise: int
    server_maxconn: int
    error_limit: int


@dataclass
class BalancerPlan:
    """The whole translation: per service, the global HTTP/2 settings, and what was not mapped."""

    services: Dict[str, ServicePlan]
    h2_max_concurrent_streams: int
    h2_initial_window_size: int
    mapped: List[Tuple[str, str]] = field(default_factory=list)
    unmapped: List[Tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        lines = ["Envoy (charts/hourglass, rendered) -> haproxy:"]
        lines += [f"  {envoy:<70} -> {haproxy}" for envoy, haproxy in self.mapped]
        lines.append("Not mapped (haproxy has no equivalent, or it does not apply on one machine):")
        lines += [f"  {envoy:<70}    {reason}" for envoy, reason in self.unmapped]
        return "\n".join(lines)


def envoy_bootstrap(rendered_manifests: str) -> Dict[str, Any]:
    """The Envoy bootstrap in the chart's rendered manifests (its ConfigMap's envoy.yaml)."""
    for document in yaml.safe_load_all(rendered_manifests):
        if document and document.get("kind") == "ConfigMap" and "envoy.yaml" in document.get("data", {}):
            return yaml.safe_load(document["data"]["envoy.yaml"])
    raise EnvoyConfigError("no ConfigMap with envoy.yaml in the rendered chart")


def translate(bootstrap: Dict[str, Any]) -> BalancerPlan:
    """Maps every setting of the bootstrap; raises EnvoyConfigError naming any it does not know."""
    reader = _Reader(bootstrap)
    root = reader.root()
    mapped: List[Tuple[str, str]] = []
    root.aside("admin", "Envoy's admin API; haproxy's stats socket serves the runner")
    resources = root["static_resources"]
    clusters = {cluster.value["name"]: cluster for cluster in resources["clusters"]}
    services: Dict[str, ServicePlan] = {}
    h2_settings: Optional[Tuple[int, int]] = None
    for listener in resources["listeners"]:
        name = listener["name"]
        if name == "stats":
            listener.aside("address", "the stats listener: Prometheus scrapes Envoy there")
            listener.aside("filter_chains", "the stats listener exposes two of Envoy's admin paths")
            continue
        listener.aside("address", "the runner binds loopback ports of its own")
        listener.aside(
            "per_connection_buffer_limit_bytes", "haproxy buffers per stream (tune.bufsize), bounded by the windows below"
        )
        chains = listener["filter_chains"]
        if len(chains) != 1 or len(chains[0]["filters"]) != 1:
            raise EnvoyConfigError(f"listener {name}: expected one filter chain with one filter")
        manager_filter = chains[0]["filters"][0]
        if manager_filter["name"] != "envoy.filters.network.http_connection_manager":
            raise EnvoyConfigError(f"listener {name}: not an HTTP connection manager")
        manager = manager_filter["typed_config"]
        manager["@type"]
        manager["stat_prefix"]
        codec = manager["codec_type"]
        if codec not in ("HTTP2", "AUTO"):
            raise EnvoyConfigError(f"listener {name}: codec_type {codec} is not mapped (HTTP2 or AUTO)")
        accept_http1 = codec == "AUTO"
        if accept_http1:
            mapped.append(
                (
                    f"{name}: codec_type AUTO",
                    "bind ... without proto: haproxy tells h2c (prior knowledge) by its preface, else HTTP/1.1, "
                    "and forwards both over the servers' proto h2",
                )
            )
        else:
            mapped.append((f"{name}: codec_type HTTP2", "bind ... proto h2 (h2c, prior knowledge)"))
        h2 = manager["http2_protocol_options"]
        settings = (h2["max_concurrent_streams"], h2["initial_stream_window_size"])
        h2.aside("initial_connection_window_size", "haproxy 2.6 sizes the connection window itself")
        if h2_settings not in (None, settings):
            raise EnvoyConfigError("the listeners' HTTP/2 settings differ; haproxy sets them once, globally")
        h2_settings = settings
        max_age = manager["common_http_protocol_options"]["max_connection_duration"]
        reader.unmapped.append(
            (
                f"{name}: max_connection_duration {max_age}",
                "haproxy 2.6 has no connection age; it balances each call (stream), so a long-lived client "
                "connection still reaches every replica",
            )
        )
        manager.aside("drain_timeout", "haproxy is not reloaded during a run")
        idle = manager.get("stream_idle_timeout")
        client_timeout = _ms(idle) if idle else "300000ms"  # Envoy's default stream idle timeout: 5 minutes
        mapped.append((f"{name}: stream_idle_timeout {idle or '300s (default)'}", f"timeout client {client_timeout}"))
        route_config = manager["route_config"]
        route_config["name"]
        hosts = route_config["virtual_hosts"]
        if len(hosts) != 1 or len(hosts[0]["routes"]) != 1:
            raise EnvoyConfigError(f"listener {name}: expected one virtual host with one route")
        hosts[0]["name"]
        if hosts[0]["domains"] != ["*"]:
            raise EnvoyConfigError(f"listener {name}: only domains ['*'] are mapped")
        route = hosts[0]["routes"][0]
        if route["match"].whole() != {"prefix": "/"}:
            raise EnvoyConfigError(f"listener {name}: only the match prefix '/' is mapped")
        action = route["route"]
        cluster_name = action["cluster"]
        route_timeout = action.get("timeout", "15s")
        # Envoy's route timeout bounds the whole call (0: no bound, the ingest streams); haproxy's server
        # timeout is the server's inactivity, which for a unary call is the wait for its answer.
        server_timeout = client_timeout if _seconds(route_timeout) == 0 else _ms(route_timeout)
        mapped.append((f"{name}: route / -> cluster {cluster_name}", f"frontend {name} -> default_backend {cluster_name}"))
        mapped.append((f"{name}: route timeout {route_timeout}", f"timeout server {server_timeout}"))
        retries, retry_on, redispatch = 0, "", False
        if "retry_policy" in action:
            policy = action["retry_policy"]
            conditions = policy["retry_on"].split(",")
            if set(conditions) - {"unavailable", "refused-stream", "connect-failure"}:
                raise EnvoyConfigError(f"listener {name}: retry_on {conditions} has conditions not mapped")
            retries = int(policy["num_retries"])
            retry_on = "conn-failure empty-response"
            predicates = [predicate["name"] for predicate in policy.get("retry_host_predicate", [])]
            for predicate in policy.get("retry_host_predicate", []):
                predicate["typed_config"].whole()
            redispatch = "envoy.retry_host_predicates.previous_hosts" in predicates
            mapped.append(
                (
                    f"{name}: retry_policy connect-failure, refused-stream, {retries} retries"
                    + (", previous_hosts" if redispatch else ""),
                    f"retries {retries}, retry-on {retry_on}" + (", option redispatch 1" if redispatch else ""),
                )
            )
            reader.unmapped.append(
                (
                    f"{name}: retry_on unavailable",
                    "gRPC's UNAVAILABLE is a trailer of an HTTP 200, which haproxy cannot retry on; the SDK's query "
                    "helper retries UNAVAILABLE reads itself",
                )
            )
            policy.aside("retry_back_off", "haproxy retries at once, on another server")
            policy.aside("host_selection_retry_max_attempts", "haproxy's redispatch picks another server once")
        else:
            mapped.append((f"{name}: no retry_policy (the balancer never resends a batch)", "retries 0"))
        filters = manager["http_filters"]
        if [item["name"] for item in filters] != ["envoy.filters.http.router"]:
            raise EnvoyConfigError(f"listener {name}: only the router filter is mapped")
        filters[0]["typed_config"].whole()

        cluster = clusters[cluster_name]
        cluster["name"]
        for key in ("type", "dns_refresh_rate", "dns_lookup_family", "load_assignment"):
            cluster.aside(key, "the runner lists the replicas' loopback addresses itself")
        policy_name = cluster["lb_policy"]
        balance = {"LEAST_REQUEST": "leastconn", "ROUND_ROBIN": "roundrobin", "RANDOM": "random"}.get(policy_name)
        if balance is None:
            raise EnvoyConfigError(f"cluster {cluster_name}: lb_policy {policy_name} is not mapped")
        mapped.append((f"{cluster_name}: lb_policy {policy_name}", f"balance {balance} (active streams per server)"))
        connect_timeout = _ms(cluster["connect_timeout"])
        mapped.append((f"{cluster_name}: connect_timeout", f"timeout connect {connect_timeout}"))
        cluster.aside("per_connection_buffer_limit_bytes", "as the listener's")
        upstream = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        upstream["@type"]
        upstream_h2 = upstream["explicit_http_config"]["http2_protocol_options"]
        if (upstream_h2["initial_stream_window_size"], True) != (settings[1], True):
            raise EnvoyConfigError(f"cluster {cluster_name}: its stream window differs from the listener's")
        upstream_h2.aside("initial_connection_window_size", "haproxy 2.6 sizes the connection window itself")
        mapped.append((f"{cluster_name}: explicit HTTP/2 upstream", "server ... proto h2"))
        checks = cluster["health_checks"]
        if len(checks) != 1 or "grpc_health_check" not in checks[0]:
            raise EnvoyConfigError(f"cluster {cluster_name}: expected one gRPC health check")
        check = checks[0]
        interval, timeout = check["interval"], check["timeout"]
        fall, rise = int(check["unhealthy_threshold"]), int(check["healthy_threshold"])
        health_service = check["grpc_health_check"]["service_name"]
        mapped.append(
            (
                f"{cluster_name}: gRPC health check of {health_service} every {interval}, timeout {timeout}, "
                f"{fall} down / {rise} up",
                f"external-check grpc-health-probe -service {health_service}, inter {_ms(interval)}, "
                f"timeout check {_ms(timeout)}, fall {fall}, rise {rise}",
            )
        )
        if cluster["common_lb_config"].whole() != {"healthy_panic_threshold": {"value": 0}}:
            raise EnvoyConfigError(f"cluster {cluster_name}: only a panic threshold of 0 is mapped")
        mapped.append((f"{cluster_name}: healthy_panic_threshold 0", "haproxy's own behaviour: no healthy server, 503"))
        outlier = cluster["outlier_detection"]
        error_limit = int(outlier["consecutive_gateway_failure"])
        if outlier["enforcing_consecutive_gateway_failure"] != 100 or outlier["enforcing_consecutive_5xx"] != 0:
            raise EnvoyConfigError(f"cluster {cluster_name}: only gateway-failure ejection is mapped")
        mapped.append(
            (
                f"{cluster_name}: outlier_detection consecutive_gateway_failure {error_limit}",
                f"observe layer4 error-limit {error_limit} on-error mark-down",
            )
        )
        outlier.aside("interval", "haproxy counts errors as they happen")
        outlier.aside(
            "base_ejection_time", "a marked-down haproxy server comes back when its health check passes (rise)"
        )
        thresholds = cluster["circuit_breakers"]["thresholds"]
        if len(thresholds) != 1:
            raise EnvoyConfigError(f"cluster {cluster_name}: expected one circuit-breaker threshold")
        maxconn = int(thresholds[0]["max_requests"])
        thresholds[0]["max_pending_requests"]
        thresholds[0]["max_connections"]
        mapped.append(
            (f"{cluster_name}: circuit_breakers max_requests {maxconn}", f"server ... maxconn {maxconn} (streams)")
        )
        services[name] = ServicePlan(
            name=name,
            health_service=health_service,
            accept_http1=accept_http1,
            client_timeout=client_timeout,
            balance=balance,
            connect_timeout=connect_timeout,
            server_timeout=server_timeout,
            retries=retries,
            retry_on=retry_on,
            redispatch=redispatch,
            check_inter=_ms(interval),
            check_timeout=_ms(timeout),
            check_fall=fall,
            check_rise=rise,
            server_maxconn=maxconn,
            error_limit=error_limit,
        )
    if "admin" in clusters:
        clusters["admin"].whole()
        reader.unmapped.append(("cluster admin", "Envoy's own admin endpoint, behind the stats listener"))
    unread = reader.unread()
    if unread:
        raise EnvoyConfigError(
            "the chart's Envoy bootstrap has settings e2e/hourglass_e2e/balancer.py does not map: " + ", ".join(unread)
        )
    if set(services) != {"ingest", "query"} or h2_settings is None:
        raise EnvoyConfigError(f"expected the listeners ingest and query, not {sorted(services)}")
    mapped.append(("http2 max_concurrent_streams", f"tune.h2.max-concurrent-streams {h2_settings[0]}"))
    mapped.append(("http2 initial_stream_window_size", f"tune.h2.initial-window-size {h2_settings[1]}"))
    return BalancerPlan(services, int(h2_settings[0]), int(h2_settings[1]), mapped, reader.unmapped)


def _check_script(directory: Path, probe: Path, plan: ServicePlan) -> Path:
    """The external check of one backend: haproxy runs it with the server's address as $3 and port as $4."""
    path = directory / f"check-{plan.name}.sh"
    timeout_secs = int(plan.check_timeout.removesuffix("ms")) / 1000
    path.write_text(
        "#!/bin/sh\n"
        f"# The gRPC health check of {plan.health_service}, as Envoy's (generated by e2e/hourglass_e2e/balancer.py).\n"
        f'exec "{probe}" -addr "$3:$4" -service {plan.health_service} '
        f"-connect-timeout {timeout_secs}s -rpc-timeout {timeout_secs}s >/dev/null 2>&1\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def haproxy_config(
    plan: BalancerPlan,
    directory: Path,
    probe: Path,
    frontends: Dict[str, int],
    backends: Dict[str, Sequence[Tuple[str, int]]],
    socket_path: Path,
) -> str:
    """haproxy.cfg for the plan: frontends on loopback ``frontends[name]`` ports, servers ``backends[name]``
    as (server name, port) on 127.0.0.1."""
    lines = [
        "# Generated by e2e/hourglass_e2e/balancer.py from the Envoy bootstrap that charts/hourglass renders.",
        "global",
        "    external-check",
        "    insecure-fork-wanted",
        f"    stats socket {socket_path} mode 600 level admin",
        f"    tune.h2.max-concurrent-streams {plan.h2_max_concurrent_streams}",
        f"    tune.h2.initial-window-size {plan.h2_initial_window_size}",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    log stderr format raw local0 info",
    ]
    for name, service in plan.services.items():
        script = _check_script(directory, probe, service)
        lines += [
            "",
            f"frontend {name}",
            f"    bind 127.0.0.1:{frontends[name]}" + ("" if service.accept_http1 else " proto h2"),
            f"    timeout client {service.client_timeout}",
            f"    default_backend {name}",
            "",
            f"backend {name}",
            f"    balance {service.balance}",
            f"    timeout connect {service.connect_timeout}",
            f"    timeout server {service.server_timeout}",
            f"    timeout check {service.check_timeout}",
            f"    retries {service.retries}",
        ]
        if service.retry_on:
            lines.append(f"    retry-on {service.retry_on}")
        if service.redispatch:
            lines.append("    option redispatch 1")
        lines += [
            "    option external-check",
            f"    external-check command {script}",
        ]
        for server, port in backends[name]:
            lines.append(
                f"    server {server} 127.0.0.1:{port} proto h2 check inter {service.check_inter} "
                f"fall {service.check_fall} rise {service.check_rise} maxconn {service.server_maxconn} "
                f"observe layer4 error-limit {service.error_limit} on-error mark-down"
            )
    return "\n".join(lines) + "\n"


def server_states(socket_path: Path) -> Dict[Tuple[str, str], str]:
    """(backend, server) -> haproxy's status (UP, DOWN, MAINT, ...), from its stats socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(socket_path))
        connection.sendall(b"show stat\n")
        chunks = []
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    text = b"".join(chunks).decode()
    lines = [line for line in text.splitlines() if line]
    header = lines[0].lstrip("# ").split(",")
    states = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row["svname"] not in ("FRONTEND", "BACKEND"):
            states[(row["pxname"], row["svname"])] = row["status"].split(" ")[0]
    return states


def render_chart(helm: Path, chart: Path, values: Sequence[Path], settings: Dict[str, str]) -> str:
    """``helm template`` of the chart with the values files and ``--set`` settings."""
    command = [str(helm), "template", "hourglass", str(chart), "--namespace", "hourglass", "--kube-version", "1.30.0"]
    for path in values:
        command += ["-f", str(path)]
    for key, value in settings.items():
        command += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    return subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ.copy()).stdout
