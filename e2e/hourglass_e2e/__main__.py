"""The e2e runner's driver (e2e/run.sh prepares the binary, tools and venv, then runs this).

A small driver rather than pytest: the scenarios share one expensive platform (three servers, eight
processes, a balancer) started once and stopped once, run in order, each printing its figures as it
goes; a failing scenario must not stop the others (their figures are the diagnosis), and a Ctrl-C must
stop everything the run started. pytest's strengths (many small independent tests, fixtures per test,
captured output) work against all four.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from hourglass_e2e import leaks, scenarios
from hourglass_e2e.platform import Platform
from hourglass_e2e.servers import Servers


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="e2e/run.sh",
        description="Runs the deployed shape on this machine and the scenarios of issue 22 against it.",
    )
    parser.add_argument("scenarios", nargs="*", help="names or numbers (default: all): " + ", ".join(
        f"{item.number} {item.name}" for item in scenarios.SCENARIOS))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("HOURGLASS_E2E_SEED", "1")),
                        help="seed of everything random (default 1, or HOURGLASS_E2E_SEED)")
    parser.add_argument("--scale", type=float, default=float(os.environ.get("HOURGLASS_E2E_SCALE", "1")),
                        help="multiplies every load's events per second (default 1, or HOURGLASS_E2E_SCALE)")
    parser.add_argument("--keep-servers", action="store_true",
                        help="leave the run's Kafka, Cassandra and Postgres instances running afterwards")
    parser.add_argument("--log-dir", type=Path, help="the run's folder (default: a new one under $HOURGLASS_CACHE_DIR/e2e-runs)")
    args = parser.parse_args()
    chosen = scenarios.select(args.scenarios)

    repository = Path(os.environ["HOURGLASS_E2E_REPOSITORY"])
    cache = Path(os.environ["HOURGLASS_CACHE_DIR"])
    binary = Path(os.environ["HOURGLASS_BIN"])
    helm = Path(os.environ["HOURGLASS_E2E_HELM"])
    probe = Path(os.environ["HOURGLASS_E2E_PROBE"])
    started = datetime.now(timezone.utc)
    run_id = f"{started:%Y%m%d%H%M%S}{random.SystemRandom().randrange(1000):03d}"
    run_dir = args.log_dir or cache / "e2e-runs" / f"{started:%Y-%m-%dT%H-%M-%S}-seed{args.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "e2e.log", "a")

    def say(message: str) -> None:
        line = f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    # One run at a time: the runs share the `e2e` server instances and stop and restart them.
    lock = open(cache / "e2e.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another e2e run is in progress (it holds $HOURGLASS_CACHE_DIR/e2e.lock)", file=sys.stderr)
        return 2

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    say(f"e2e run {run_id}: seed {args.seed}, scale {args.scale}, scenarios {', '.join(s.name for s in chosen)}")
    say(f"logs: {run_dir}")
    servers = Servers(repository, run_dir, say)
    platform = Platform(repository, run_dir, binary, servers, run_id, say)
    results = []
    exit_status = 0
    try:
        servers.start_all()
        platform.build(helm, probe)
        platform.start()
        context = scenarios.Context(platform, servers, args.seed, args.scale, say, repository)
        for item in chosen:
            say(f"== scenario {item.number} {item.name}: {item.title}")
            began = time.monotonic()
            try:
                outcome = item.run(context)
            except Exception as error:  # noqa: BLE001 - reported, and the next scenario runs
                outcome = scenarios.Outcome(failures=[f"{type(error).__name__}: {error}"])
                log.write(traceback.format_exc())
            took = time.monotonic() - began
            for note in outcome.notes:
                say(f"   {note}")
            if outcome.figures:
                for line in outcome.figures.lines():
                    say(f"   {line}")
            failures = outcome.failures + (outcome.figures.failures if outcome.figures else [])
            for failure in failures[:20]:
                say(f"   FAILED: {failure}")
            if len(failures) > 20:
                say(f"   ... and {len(failures) - 20} more")
            verdict = "passed" if not failures else "FAILED"
            say(f"== scenario {item.number} {item.name}: {verdict} in {took:.0f} s")
            results.append((item, verdict, took, outcome.figures))
            if failures:
                exit_status = 1
            try:
                platform.ensure_running()
            except Exception as error:  # noqa: BLE001
                say(f"the platform cannot be put back after {item.name}: {error}")
                exit_status = 1
                break
    except KeyboardInterrupt:
        say("interrupted: stopping everything this run started")
        exit_status = 130
    except Exception as error:  # noqa: BLE001
        say(f"the run failed: {type(error).__name__}: {error}")
        log.write(traceback.format_exc())
        exit_status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        cpu = platform.cpu_by_role()
        if any(cpu.values()):
            say(
                f"CPU seconds of the platform's processes over the run ({binary.name} at {binary}): "
                + ", ".join(f"{role} {seconds:.0f}" for role, seconds in sorted(cpu.items()))
            )
        platform.stop()
        if args.keep_servers:
            say("servers kept running (--keep-servers)")
        else:
            servers.stop_all()
        # Passed or failed, no log of the run may hold a secret it used.
        scanned = leaks.run_logs(run_dir)
        found = leaks.find_leaks(scanned, platform.secrets)
        for leak in found[:20]:
            say(f"FAILED: a secret is in a log: {leak}")
        if found:
            exit_status = 1
        else:
            say(f"no secret of the run in its {len(scanned)} logs ({len(platform.secrets.by_label)} secrets)")
        say("summary:")
        for item, verdict, took, figures in results:
            detail = ""
            if figures:
                detail = (
                    f"sent {figures.sent}, acked {figures.acked}, stored {figures.stored_listed}, "
                    f"counted {figures.counted_rollups}, ledger {figures.ledger_received} = {figures.ledger_accepted} "
                    f"+ {figures.ledger_rejected} + {figures.ledger_throttled}"
                )
            say(f"  {item.number} {item.name:<26} {verdict:<7} {took:4.0f} s  {detail}")
        passed = sum(1 for _, verdict, _, _ in results if verdict == "passed")
        say(f"{passed} of {len(chosen)} scenarios passed; logs: {run_dir}")
        log.close()
        if exit_status == 0 and passed != len(chosen):
            exit_status = 1
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
