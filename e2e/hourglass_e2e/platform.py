"""The deployed shape on one machine: two collectors and two query services behind haproxy, two ingestors
in one consumer group, two aggregators, each its own `hourglass` process, configured as the Helm chart
configures them.

Every process reads the hourglass.toml that `helm template` renders from charts/hourglass with
e2e/values-e2e.yaml and the run's names (`--config`); what differs between replicas of a role (their
ports, the aggregator's worker id) are flags, as a pod's would be its own address; the secrets (database
URL, page-token secret) are variables, as the chart's Secrets are. Nothing else of the caller's
environment reaches them: a stray HOURGLASS_KAFKA_BROKERS would otherwise beat the file and point a run
at someone else's broker.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hourglass_e2e import balancer
from hourglass_e2e.leaks import Secrets
from hourglass_e2e.servers import POSTGRES_USER_URL, Servers

INGEST_SERVICE = "hourglass.v1.IngestService"
QUERY_SERVICE = "hourglass.v1.QueryService"
INGESTOR_SERVICE = "hourglass.ingestor"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def grpc_health(address: str, service: str, timeout_secs: float = 2.0) -> str:
    """The gRPC health status of ``service`` at ``address`` (``SERVING``, ``NOT_SERVING``, or why not)."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_secs
            )
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def wait_until(what: str, condition: Callable[[], bool], timeout_secs: float, say=None, every_secs: float = 0.2) -> float:
    """Waits for ``condition``; returns the seconds it took; raises TimeoutError naming ``what``. With
    ``say``, prints progress every 10 s of a long wait."""
    started = time.monotonic()
    next_note = started + 10
    while not condition():
        now = time.monotonic()
        if now - started > timeout_secs:
            raise TimeoutError(f"{what}: not within {timeout_secs:.0f} s")
        if say and now > next_note:
            say(f"    ... still waiting for {what} ({now - started:.0f} s)")
            next_note = now + 10
        time.sleep(every_secs)
    return time.monotonic() - started


class Process:
    """One `hourglass` process (or haproxy): started, stopped, killed and restarted by the scenarios,
    each life's output appended to the same log file."""

    def __init__(
        self,
        name: str,
        argv: List[str],
        env: Dict[str, str],
        log_path: Path,
        ready: Callable[["Process"], bool],
    ):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._ready = ready
        self.popen: Optional[subprocess.Popen] = None
        self.starts = 0
        self.log_offset = 0
        #: Where it serves Prometheus metrics, if it does.
        self.metrics_address: Optional[str] = None
        self._cpu_of_past_lives = 0.0
        self._terminating = False

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        assert not self.alive(), f"{self.name} already runs"
        self._terminating = False
        with open(self.log_path, "ab") as log:
            log.write(f"==== {datetime.now(timezone.utc):%H:%M:%S} e2e: start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.log_offset = log.tell()
            # A session of its own: a Ctrl-C in the runner's terminal reaches the runner only, which then
            # stops everything in order.
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True
            )
        self.starts += 1

    def log_since_start(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def wait_ready(self, timeout_secs: float = 120.0, say=None) -> float:
        def ready() -> bool:
            if not self.alive():
                tail = self.log_since_start()[-3000:]
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before it was ready:\n{tail}")
            return self._ready(self)

        return wait_until(f"{self.name} ready", ready, timeout_secs, say)

    def signal(self, number: int) -> None:
        if self.alive():
            self.popen.send_signal(number)

    def _cpu_of_this_life(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AssertionError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_secs(self) -> float:
        """CPU seconds (user + system) over all its lives, up to their SIGTERM or SIGKILL."""
        current = self._cpu_of_this_life() if self.alive() and not self._terminating else 0.0
        return self._cpu_of_past_lives + current

    def terminate(self) -> None:
        """Sends SIGTERM (once per life) without waiting."""
        if self.alive() and not self._terminating:
            self._cpu_of_past_lives += self._cpu_of_this_life()
            self._terminating = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout_secs: float = 60.0) -> Optional[int]:
        """SIGTERM, as Kubernetes does; SIGKILL after ``timeout_secs``. Returns the exit status."""
        if self.popen is None:
            return None
        if self.alive():
            self.terminate()
            try:
                self.popen.wait(timeout=timeout_secs)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, or a node lost."""
        if self.alive():
            if not self._terminating:
                self._cpu_of_past_lives += self._cpu_of_this_life()
            self.popen.kill()
            self.popen.wait()
        self._mark("SIGKILL")

    def _mark(self, what: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"==== {datetime.now(timezone.utc):%H:%M:%S} e2e: {what}\n".encode())

    def rss_kib(self) -> Tuple[int, int]:
        """(current, peak) resident memory of this life of the process, in KiB (0, 0 when not running)."""
        if not self.alive():
            return 0, 0
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0, 0
        fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0))


@dataclass
class Customer:
    """A customer of the run with its ingest and query keys."""

    name: str
    ingest_key: str
    query_key: str


class Platform:
    """The run's processes, configuration and balancer; and the operator's tools (keys, verify, psql)."""

    def __init__(self, repository: Path, run_dir: Path, binary: Path, servers: Servers, run_id: str, say):
        self.repository = repository
        self.run_dir = run_dir
        self.binary = binary
        self.servers = servers
        self.run_id = run_id
        self.say = say
        # Fresh names per run, so runs never see each other's data.
        self.names = {
            "database": f"e2e_{run_id}",
            "keyspace": f"e2e_{run_id}",
            "events_topic": f"e2e-{run_id}.events",
            "dead_letter_topic": f"e2e-{run_id}.dead-letter",
            "ingestor_group": f"e2e-{run_id}-ingestor",
        }
        self.database_url = f"{POSTGRES_USER_URL}/{self.names['database']}"
        self.config_path = run_dir / "hourglass.toml"
        page_token_secret = secrets.token_hex(32)
        # What must never appear in a log (checked at the end of the run: leaks.py).
        self.secrets = Secrets()
        self.secrets.add_url("the database URL", self.database_url)
        self.secrets.add("the page-token secret", page_token_secret)
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("HOURGLASS_")}
        self.env.update(
            {
                "HOURGLASS_DATABASE_URL": self.database_url,
                # One secret for both query replicas, as the chart's Secret: a page token from one replica
                # must work on the other behind the balancer.
                "HOURGLASS_PAGE_TOKEN_SECRET": page_token_secret,
                "RUST_BACKTRACE": "1",
            }
        )
        self.collectors: List[Process] = []
        self.queries: List[Process] = []
        self.ingestors: List[Process] = []
        self.aggregators: List[Process] = []
        self.haproxy: Optional[Process] = None
        self.ingest_port = free_port()
        self.query_port = free_port()
        self.haproxy_socket = run_dir / "haproxy.sock"
        self.addresses: Dict[str, str] = {}

    # ------------------------------------------------------------------------------------ set-up

    @property
    def ingest_target(self) -> str:
        """The balancer's ingest address: where the SDK clients send, as a user's app would."""
        return f"127.0.0.1:{self.ingest_port}"

    @property
    def query_target(self) -> str:
        return f"127.0.0.1:{self.query_port}"

    def hourglass(self, *arguments: str, timeout_secs: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        """Runs an `hourglass` tool with the run's configuration file and secrets."""
        # --config is global: it may follow the subcommands (`keys create ... --config FILE`).
        command = [str(self.binary), *arguments, "--config", str(self.config_path)]
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout_secs)
        # A tool's logs are on stderr, its result on stdout; the result of `keys create` is the new key,
        # which is not a log line and is withheld here (the secret scan covers tools.log).
        output = result.stdout if tuple(arguments[:2]) != ("keys", "create") else "(stdout withheld: the created key)\n"
        with open(self.run_dir / "tools.log", "a") as log:
            log.write(f"==== {' '.join(arguments)} (exit {result.returncode})\n{output}{result.stderr}\n")
        if check and result.returncode != 0:
            raise RuntimeError(f"hourglass {' '.join(arguments)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def psql(self, sql: str, database: Optional[str] = None, timeout_secs: float = 30.0) -> List[List[str]]:
        """Rows of a query on the run's database (or ``database``), as lists of strings."""
        url = f"{POSTGRES_USER_URL}/{database or self.names['database']}"
        result = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
            capture_output=True,
            text=True,
            timeout=timeout_secs,
            env={**self.env, "PGCONNECT_TIMEOUT": "5"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def render_chart(self, helm: Path) -> balancer.BalancerPlan:
        """helm template: the hourglass.toml every process reads, and the Envoy bootstrap the balancer's
        configuration is generated from."""
        chart = self.repository / "charts" / "hourglass"
        rendered = balancer.render_chart(
            helm,
            chart,
            [self.repository / "e2e" / "values-e2e.yaml"],
            {
                "kafka.brokers": self.servers.kafka_brokers,
                "kafka.eventsTopic": self.names["events_topic"],
                "kafka.deadLetterTopic": self.names["dead_letter_topic"],
                "cql.nodes[0]": self.servers.cql_node,
                "cql.keyspace": self.names["keyspace"],
                "ingestor.config.ingestor-group": self.names["ingestor_group"],
            },
        )
        (self.run_dir / "chart-rendered.yaml").write_text(rendered)
        config = next(
            document["data"]["hourglass.toml"]
            for document in yaml.safe_load_all(rendered)
            if document and document.get("kind") == "ConfigMap" and "hourglass.toml" in document.get("data", {})
        )
        self.config_path.write_text(config)
        plan = balancer.translate(balancer.envoy_bootstrap(rendered))
        (self.run_dir / "balancer-mapping.txt").write_text(plan.describe() + "\n")
        return plan

    def create_schema(self) -> None:
        """What the chart's migration Job does, on a database and keyspace of this run's own."""
        self.psql(f'CREATE DATABASE "{self.names["database"]}"', database="hourglass")
        self.hourglass("migrate", "postgres")
        self.hourglass("migrate", "cql")

    def _role(self, role: str, index: int, flags: List[str], ready: Callable[[Process], bool]) -> Process:
        name = f"{role}-{index}"
        metrics_address = f"127.0.0.1:{free_port()}"
        argv = [str(self.binary), role, "--config", str(self.config_path), *flags, "--metrics-listen-addr", metrics_address]
        process = Process(name, argv, self.env, self.run_dir / f"{name}.log", ready)
        process.metrics_address = metrics_address
        return process

    def build(self, helm: Path, probe: Path) -> None:
        plan = self.render_chart(helm)
        self.create_schema()
        for index in (1, 2):
            port = free_port()
            self.addresses[f"collector-{index}"] = f"127.0.0.1:{port}"
            self.collectors.append(
                self._role(
                    "collector",
                    index,
                    ["--listen-addr", f"127.0.0.1:{port}"],
                    lambda process, port=port: grpc_health(f"127.0.0.1:{port}", INGEST_SERVICE) == "SERVING",
                )
            )
        for index in (1, 2):
            port = free_port()
            self.addresses[f"ingestor-{index}"] = f"127.0.0.1:{port}"
            self.ingestors.append(
                self._role(
                    "ingestor",
                    index,
                    ["--health-listen-addr", f"127.0.0.1:{port}"],
                    lambda process, port=port: grpc_health(f"127.0.0.1:{port}", INGESTOR_SERVICE) == "SERVING",
                )
            )
        for index in (1, 2):
            self.aggregators.append(
                self._role(
                    "aggregator",
                    index,
                    ["--aggregator-worker-id", f"aggregator-{index}"],
                    lambda process: "aggregator running" in process.log_since_start(),
                )
            )
        for index in (1, 2):
            port = free_port()
            self.addresses[f"query-{index}"] = f"127.0.0.1:{port}"
            self.queries.append(
                self._role(
                    "query",
                    index,
                    ["--listen-addr", f"127.0.0.1:{port}"],
                    lambda process, port=port: grpc_health(f"127.0.0.1:{port}", QUERY_SERVICE) == "SERVING",
                )
            )
        config = balancer.haproxy_config(
            plan,
            self.run_dir,
            probe,
            {"ingest": self.ingest_port, "query": self.query_port},
            {
                "ingest": [(f"collector-{i}", int(self.addresses[f"collector-{i}"].rsplit(":", 1)[1])) for i in (1, 2)],
                "query": [(f"query-{i}", int(self.addresses[f"query-{i}"].rsplit(":", 1)[1])) for i in (1, 2)],
            },
            self.haproxy_socket,
        )
        haproxy_config = self.run_dir / "haproxy.cfg"
        haproxy_config.write_text(config)
        check = subprocess.run(["haproxy", "-c", "-f", str(haproxy_config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses {haproxy_config}: {check.stdout}{check.stderr}")
        self.haproxy = Process(
            "haproxy",
            ["haproxy", "-db", "-f", str(haproxy_config)],
            self.env,
            self.run_dir / "haproxy.log",
            lambda process: self.haproxy_socket.exists(),
        )

    def all_processes(self) -> List[Process]:
        return self.collectors + self.ingestors + self.aggregators + self.queries

    def start(self) -> None:
        started = time.monotonic()
        # The collectors create the topics; the others wait for what they need anyway.
        for process in self.all_processes():
            process.start()
        for process in self.all_processes():
            process.wait_ready(timeout_secs=180, say=self.say)
        self.haproxy.start()
        self.haproxy.wait_ready(timeout_secs=30)
        self.wait_balanced()
        self.say(
            f"platform: 2 collectors and 2 query services behind haproxy (ingest {self.ingest_target}, query "
            f"{self.query_target}), 2 ingestors (group {self.names['ingestor_group']}), 2 aggregators; "
            f"ready in {time.monotonic() - started:.0f} s"
        )

    def balancer_states(self) -> Dict[Tuple[str, str], str]:
        return balancer.server_states(self.haproxy_socket)

    def wait_balanced(self, timeout_secs: float = 60.0) -> None:
        """Until haproxy's health checks see every collector and query service UP."""
        wait_until(
            "every replica UP in haproxy",
            lambda: set(self.balancer_states().values()) == {"UP"},
            timeout_secs,
            self.say,
        )

    def restart(self, process: Process, timeout_secs: float = 180.0) -> float:
        """Starts ``process`` again and waits until it is ready (and, behind the balancer, UP)."""
        process.start()
        took = process.wait_ready(timeout_secs=timeout_secs, say=self.say)
        if process in self.collectors or process in self.queries:
            backend = "ingest" if process in self.collectors else "query"
            wait_until(
                f"{process.name} UP in haproxy",
                lambda: self.balancer_states().get((backend, process.name)) == "UP",
                60,
                self.say,
            )
        return took

    def ensure_running(self) -> None:
        """Every process up (a scenario that failed half-way may have left one down)."""
        for process in self.all_processes():
            if not process.alive():
                self.say(f"  restarting {process.name}, left down")
                self.restart(process)
        self.wait_balanced()

    def cpu_by_role(self) -> Dict[str, float]:
        roles: Dict[str, float] = {}
        for process in self.all_processes() + ([self.haproxy] if self.haproxy else []):
            role = process.name.rsplit("-", 1)[0]
            roles[role] = roles.get(role, 0.0) + process.cpu_secs()
        return roles

    def stop(self) -> None:
        """Stops everything it started, the balancer last (SIGTERM; SIGKILL after a minute)."""
        processes = self.collectors + self.queries + self.ingestors + self.aggregators
        # All at once, as a deployment being deleted: each waits out its own shutdown delay.
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop(timeout_secs=60)
        if self.haproxy is not None:
            self.haproxy.stop(timeout_secs=10)

    # ------------------------------------------------------------------------------------ tools

    def create_customer(self, name: str, events_per_second: Optional[int] = None) -> Customer:
        keys = {}
        for scope in ("ingest", "query"):
            result = self.hourglass("keys", "create", "--customer", name, "--scope", scope, "--name", "e2e", "--output", "json")
            keys[scope] = json.loads(result.stdout)["key"]
            self.secrets.add_api_key(f"the {scope} key of customer {name}", keys[scope])
        if events_per_second is not None:
            self.hourglass(
                "keys",
                "limits",
                "--customer",
                name,
                "--events-per-second",
                str(events_per_second),
                "--burst-events",
                str(events_per_second),
            )
        return Customer(name, keys["ingest"], keys["query"])

    def verify(self, start: datetime, end: datetime) -> List[Dict[str, object]]:
        """`hourglass verify` over [start, end): its ledger rows, each hour's raw store recounted."""
        result = self.hourglass(
            "verify",
            "--from",
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--to",
            end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            timeout_secs=300,
            check=False,
        )
        rows = []
        for line in result.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 9 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", fields[1]):
                rows.append(
                    {
                        "customer": fields[0],
                        "hour": datetime.strptime(fields[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc),
                        "received": int(fields[2]),
                        "accepted": int(fields[3]),
                        "rejected": int(fields[4]),
                        "throttled": int(fields[5]),
                        "stored": int(fields[6]),
                        "counted": int(fields[7]),
                        "status": " ".join(fields[8:]),
                    }
                )
        if result.returncode != 0 and not rows:
            raise RuntimeError(f"hourglass verify failed ({result.returncode}): {result.stderr.strip()}")
        return rows

    def consumer_lag(self) -> int:
        """Records of the events topic the ingestors' group has not committed."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.servers.kafka_brokers,
                "group.id": self.names["ingestor_group"],
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        try:
            topic = self.names["events_topic"]
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = [TopicPartition(topic, partition) for partition in metadata.topics[topic].partitions]
            lag = 0
            for committed in consumer.committed(partitions, timeout=10):
                low, high = consumer.get_watermark_offsets(committed, timeout=10)
                position = committed.offset if committed.offset >= 0 else low
                lag += max(high - position, 0)
            return lag
        finally:
            consumer.close()


def metric(process: Process, name: str, labels: str = "") -> float:
    """The sum of a Prometheus metric's samples (those whose labels contain ``labels``) that ``process``
    serves now; 0 when it does not run or has no such sample yet."""
    import urllib.request

    if not process.alive() or process.metrics_address is None:
        return 0.0
    try:
        with urllib.request.urlopen(f"http://{process.metrics_address}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class RssMonitor:
    """Samples the resident memory of processes every half second, keeping each one's peak."""

    def __init__(self, processes: List[Process]):
        self.processes = processes
        self.peak_kib: Dict[str, int] = {process.name: 0 for process in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for process in self.processes:
                current, peak = process.rss_kib()
                self.peak_kib[process.name] = max(self.peak_kib[process.name], current, peak)

    def __enter__(self) -> "RssMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
