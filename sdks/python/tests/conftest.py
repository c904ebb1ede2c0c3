"""Fixtures: a real `hourglass standalone` on a free port with a data directory of its own.

The binary is $HOURGLASS_BIN, else `hourglass` in $CARGO_TARGET_DIR/debug (or the repository's
target/debug): build it first with `cargo build -p hourglass`. No server is mocked.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

REPOSITORY = Path(__file__).resolve().parents[3]


def hourglass_binary() -> Path:
    candidates = [os.environ.get("HOURGLASS_BIN")]
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    if target_dir:
        candidates.append(str(Path(target_dir) / "debug" / "hourglass"))
    candidates.append(str(REPOSITORY / "target" / "debug" / "hourglass"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise pytest.UsageError(
        "no hourglass binary: build it (cargo build -p hourglass) and set HOURGLASS_BIN or CARGO_TARGET_DIR; "
        f"looked at {', '.join(c for c in candidates if c)}"
    )


@dataclass
class Standalone:
    """A running `hourglass standalone`: its address and the demo customer's keys."""

    binary: Path
    data_dir: Path
    log_path: Path
    extra_args: List[str]
    process: Optional[subprocess.Popen] = None
    address: str = ""
    ingest_key: str = ""
    query_key: str = ""

    def start(self, listen_addr: str = "127.0.0.1:0", timeout_secs: float = 60.0) -> "Standalone":
        log = open(self.log_path, "ab")
        log.write(f"==== starting standalone on {listen_addr}\n".encode())
        log.flush()
        start_offset = log.tell()
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "standalone",
                "--data-dir",
                str(self.data_dir),
                "--listen-addr",
                listen_addr,
                # Open hours are rolled up every second, so the tests see counts soon.
                "--provisional-interval-secs",
                "1",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as reader:
                reader.seek(start_offset)
                text = reader.read().decode(errors="replace")
            match = re.search(r"gRPC \([^)]*\): (\S+)", text)
            if match:
                self.address = match.group(1)
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"standalone exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"standalone did not print its address within {timeout_secs} s (log: {self.log_path})")
        keys = (self.data_dir / "demo-keys.txt").read_text()
        self.ingest_key = re.search(r"^ingest: (\S+)$", keys, re.M).group(1)
        self.query_key = re.search(r"^query: (\S+)$", keys, re.M).group(1)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_secs: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_secs)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def keys(self, *arguments: str) -> str:
        """Runs `hourglass keys --data-dir DIR ARGUMENTS...` and returns its stdout."""
        result = subprocess.run(
            [str(self.binary), "keys", "--data-dir", str(self.data_dir), *arguments],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="session")
def binary() -> Path:
    return hourglass_binary()


@pytest.fixture
def standalone_factory(binary, tmp_path):
    """Makes standalones (with extra flags), each with its own data directory; stops them at the end."""
    started: List[Standalone] = []

    def make(*extra_args: str) -> Standalone:
        index = len(started)
        instance = Standalone(
            binary=binary,
            data_dir=tmp_path / f"data-{index}",
            log_path=tmp_path / f"standalone-{index}.log",
            extra_args=list(extra_args),
        )
        started.append(instance)
        return instance.start()

    yield make
    for instance in started:
        instance.stop()
    if os.environ.get("HOURGLASS_KEEP_TEST_DATA") is None:
        for instance in started:
            shutil.rmtree(instance.data_dir, ignore_errors=True)


@pytest.fixture
def standalone(standalone_factory) -> Standalone:
    return standalone_factory()
