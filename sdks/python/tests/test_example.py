"""The README's SDK example is examples/quickstart.py, verbatim, and it runs against a real standalone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPOSITORY

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_the_readme_shows_the_example_as_it_is():
    readme = (REPOSITORY / "README.md").read_text()
    blocks = re.findall(r"<!-- sdks/python/examples/quickstart.py -->\n```python\n(.*?)```", readme, re.S)
    assert blocks, "README.md has no block marked <!-- sdks/python/examples/quickstart.py -->"
    body = EXAMPLE.read_text()
    code = body[body.index('"""', 3) + 4 :]  # the file without its docstring
    assert blocks[0].strip() == code.strip(), "README.md's example differs from sdks/python/examples/quickstart.py"


def test_the_example_runs(standalone):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={
            **os.environ,
            "HOURGLASS_TARGET": standalone.address,
            "HOURGLASS_INGEST_KEY": standalone.ingest_key,
            "HOURGLASS_QUERY_KEY": standalone.query_key,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "acked: 1001 events" in result.stdout
    assert re.search(r"page_view: 1000 events, 50 users, mean load_ms", result.stdout), result.stdout
    assert "ledger: received 1001, stored 1001, counted 1001" in result.stdout, result.stdout
