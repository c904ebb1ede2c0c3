"""The e2e run's secret scan finds a planted key, its secret part and a database password (run with
`python3 -m pytest e2e/tests`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hourglass_e2e.leaks import Secrets, find_leaks  # noqa: E402

KEY = "hgk_Ab12Cd34_" + "S" * 31 + "x" + "ChkSum"


def secrets() -> Secrets:
    planted = Secrets()
    planted.add_api_key("ingest key of customer e2e-1", KEY)
    planted.add_url("the database URL", "postgres://hourglass:s3cret-pw@127.0.0.1:5462/e2e_1")
    return planted


def test_a_clean_log_passes(tmp_path):
    log = tmp_path / "collector-0.log"
    log.write_text('{"level":"INFO","message":"batch acked","customer_id":"e2e-1","key_id":"Ab12Cd34"}\n')
    assert find_leaks([log], secrets()) == []


def test_a_planted_key_fails_naming_file_and_line(tmp_path):
    log = tmp_path / "collector-0.log"
    log.write_text(f"first line\nauthorization: Bearer {KEY}\n")
    leaks = find_leaks([log], secrets())
    assert f"{log}:2: ingest key of customer e2e-1" in leaks
    assert all(KEY not in leak for leak in leaks), "the report must not repeat the secret"


def test_the_secret_part_alone_fails(tmp_path):
    log = tmp_path / "ingestor-0.log"
    log.write_text("key " + KEY[13:45] + " seen\n")
    assert find_leaks([log], secrets()) == [f"{log}:1: ingest key of customer e2e-1 (its secret part)"]


def test_a_password_in_a_rewritten_url_fails(tmp_path):
    log = tmp_path / "aggregator-0.log"
    log.write_text("connecting to postgres://hourglass:s3cret-pw@db.internal:5432/other\n")
    assert find_leaks([log], secrets()) == [f"{log}:1: the database URL (its user:password@)"]
