"""The run's own Kafka broker, Cassandra node and Postgres cluster, through e2e/servers/*.sh.

The scenarios stop the broker, stop Cassandra and restart Postgres, so a run never uses the machine's
shared instances (`main`, which other tests use at the same time): it starts instances named `e2e` on
ports of their own, and stops them when it ends (unless told to keep them for the next run).

One broker with the events topic's 12 partitions, not two brokers: what the scenarios test is the
platform's behaviour when its log is unreachable (scenario broker-outage stops it) and when its consumers
come and go (12 partitions over two ingestors, rebalanced on every kill). A second broker would add
replication and leader election, which are Kafka's to get right, and a second JVM on a 2-core machine that
already runs Cassandra, Postgres and eight Hourglass processes.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Dict, List

KAFKA_PORT = 19592  # controller: +1000
CASSANDRA_PORT = 19542  # storage: +1000, JMX: +2000
POSTGRES_PORT = 5462
INSTANCE = "e2e"
POSTGRES_USER_URL = f"postgres://hourglass:hourglass@127.0.0.1:{POSTGRES_PORT}"


class Servers:
    """Starts, stops and restarts the run's server instances; every script's output goes to servers.log."""

    def __init__(self, repository: Path, run_dir: Path, say):
        self.scripts = repository / "e2e" / "servers"
        self.log_path = run_dir / "servers.log"
        self.say = say
        self.started: List[str] = []

    def _script(self, server: str, action: str) -> subprocess.Popen:
        port = {"kafka": KAFKA_PORT, "cassandra": CASSANDRA_PORT, "postgres": POSTGRES_PORT}[server]
        log = open(self.log_path, "ab")
        log.write(f"==== {time.strftime('%H:%M:%S')} {server}.sh {action} --name {INSTANCE}\n".encode())
        log.flush()
        arguments = ["--name", INSTANCE]
        if action == "start" or server == "postgres":
            arguments += ["--port", str(port)]
        process = subprocess.Popen(
            ["bash", str(self.scripts / f"{server}.sh"), action, *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return process

    def run(self, server: str, action: str, timeout_secs: float = 300) -> None:
        """Runs ``SERVER.sh ACTION`` on the run's instance and waits for it."""
        started = time.monotonic()
        process = self._script(server, action)
        try:
            status = process.wait(timeout=timeout_secs)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError(f"{server}.sh {action} --name {INSTANCE} took over {timeout_secs} s ({self.log_path})")
        if status != 0:
            raise RuntimeError(f"{server}.sh {action} --name {INSTANCE} failed (exit {status}); see {self.log_path}")
        self.say(f"  {server} {action}: {time.monotonic() - started:.1f} s")

    def start_all(self) -> None:
        """Starts the three at once (Cassandra takes the longest) and waits for each."""
        started = time.monotonic()
        processes: Dict[str, subprocess.Popen] = {
            server: self._script(server, "start") for server in ("postgres", "kafka", "cassandra")
        }
        failed = []
        for server, process in processes.items():
            if process.wait(timeout=600) == 0:
                self.started.append(server)
            else:
                failed.append(server)
        if failed:
            raise RuntimeError(f"could not start {', '.join(failed)}; see {self.log_path}")
        self.say(
            f"servers (instance '{INSTANCE}'): Postgres 127.0.0.1:{POSTGRES_PORT}, Kafka 127.0.0.1:{KAFKA_PORT}, "
            f"Cassandra 127.0.0.1:{CASSANDRA_PORT}, ready in {time.monotonic() - started:.0f} s"
        )

    def stop_all(self) -> None:
        for server in reversed(self.started):
            try:
                self.run(server, "stop", timeout_secs=120)
            except RuntimeError as error:
                self.say(f"  {error}")
        self.started.clear()

    @property
    def kafka_brokers(self) -> str:
        return f"127.0.0.1:{KAFKA_PORT}"

    @property
    def cql_node(self) -> str:
        return f"127.0.0.1:{CASSANDRA_PORT}"
