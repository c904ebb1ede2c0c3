"""No secret in the logs: every log the run captured is scanned for the secrets the run used.

The run knows its secrets (the API keys it created, whole and their secret part; the Postgres URL with
its password; the query service's page-token secret): :class:`Secrets` collects them as they are made,
and :func:`find_leaks` reports every log line that contains one, by file, line and the secret's label,
never the secret itself (the report is printed, and would leak it again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List
from urllib.parse import urlsplit

# `hgk_<key id: 8>_<secret: 32><checksum: 6>` (crates/core/src/api_key.rs).
KEY_PREFIX = "hgk_"
KEY_ID_CHARS = 8
SECRET_CHARS = 32


class Secrets:
    """The run's secrets, each with a label that says what it is without showing it."""

    def __init__(self) -> None:
        self.by_label: Dict[str, str] = {}

    def add(self, label: str, value: str) -> None:
        # Short values would match by accident (and are not secrets worth the name).
        if len(value) >= 8:
            self.by_label[label] = value

    def add_api_key(self, label: str, key: str) -> None:
        """A key, and its secret part alone: a log that cut the key id off would still leak it."""
        self.add(label, key)
        secret_start = len(KEY_PREFIX) + KEY_ID_CHARS + 1
        self.add(f"{label} (its secret part)", key[secret_start : secret_start + SECRET_CHARS])

    def add_url(self, label: str, url: str) -> None:
        """A URL with credentials, and its `user:password@` part: a log that rewrote the host or the path
        would still leak the password. A password alone is not scanned for when it is a common word (the
        local servers use `hourglass`), only in that form."""
        self.add(label, url)
        parts = urlsplit(url)
        if parts.password:
            self.add(f"{label} (its user:password@)", f"{parts.username}:{parts.password}@")


def find_leaks(log_paths: Iterable[Path], secrets: Secrets) -> List[str]:
    """`file:line: label` for every line of the logs that contains a secret."""
    leaks = []
    for path in sorted(log_paths):
        with open(path, "rb") as log:
            for number, raw_line in enumerate(log, start=1):
                line = raw_line.decode(errors="replace")
                for label, value in secrets.by_label.items():
                    if value in line:
                        leaks.append(f"{path}:{number}: {label}")
    return leaks


# Logs not scanned, with why: the local server scripts print their own URL, password included, on
# purpose (`e2e/servers/postgres.sh`: "ready: postgres://…"); they are test fixtures, not Hourglass.
NOT_SCANNED = {"servers.log"}


def run_logs(run_dir: Path) -> List[Path]:
    """Every log the run captured but :data:`NOT_SCANNED`: each Hourglass process's, the tools', the
    balancer's, the run's own."""
    return [path for path in run_dir.rglob("*.log") if path.is_file() and path.name not in NOT_SCANNED]
