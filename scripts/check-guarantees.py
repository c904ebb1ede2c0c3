#!/usr/bin/env python3
"""Checks that every promise in docs/guarantees.md names a test, and that every named test exists.

usage: check-guarantees.py [--self-test]

A proof is written `FILE::NAME`, in backticks. It exists when:
  - FILE is a `.rs` file of the repository holding `fn NAME` that is a test (`#[test]` or `#[tokio::test]`
    among the attributes just above it, and no `#[ignore]`), or, in a conformance suite
    (`crates/conformance/`), a case the file's own `suite` calls (the suite runs against every implementation);
  - FILE is `e2e/hourglass_e2e/scenarios.py` with a `@scenario(N, "NAME", ...)`;
  - FILE is another `.py` file holding `def NAME(` (a pytest test).
Every row of every table (past its header) must name at least one proof.

Fails (exit 1) listing each missing test and each row without one. --self-test checks that a renamed test,
an ignored test, a helper that is not a test and a row without a proof are all caught.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "guarantees.md"

PROOF = re.compile(r"`([\w./-]+\.(?:rs|py))::([\w-]+)`")
SCENARIO = re.compile(r'@scenario\(\s*\d+\s*,\s*"([\w-]+)"')


def rust_test_exists(source: str, name: str, conformance: bool) -> bool:
    match = re.search(rf"^[ \t]*(?:pub(?:\([\w:]+\))? )?(?:async )?fn {re.escape(name)}\b", source, re.M)
    if not match:
        return False
    if conformance:
        # A case of a shared suite: it counts only if the suite (or another case) calls it.
        return len(re.findall(rf"\b{re.escape(name)}\(", source)) >= 2
    # The attributes directly above the fn (doc comments and attributes, no blank line).
    above = source[: match.start()].rstrip("\n").split("\n")
    attributes = []
    for line in reversed(above):
        stripped = line.strip()
        if stripped.startswith("#[") or stripped.startswith("///") or stripped.startswith("//"):
            attributes.append(stripped)
        else:
            break
    is_test = any(re.match(r"#\[(?:tokio::)?test\b", a) for a in attributes)
    ignored = any(a.startswith("#[ignore") for a in attributes)
    return is_test and not ignored


def proof_exists(root: Path, file: str, name: str) -> str | None:
    """None if the proof exists, else why not."""
    path = root / file
    if not path.is_file():
        return f"{file} does not exist"
    source = path.read_text()
    if file.endswith(".rs"):
        conformance = file.startswith("crates/conformance/")
        if rust_test_exists(source, name, conformance):
            return None
        what = "a case its suite calls" if conformance else "a test (#[test] or #[tokio::test], not ignored)"
        return f"{file} has no {what} named {name}"
    if file.endswith("scenarios.py"):
        if name in SCENARIO.findall(source):
            return None
        return f"{file} has no scenario named {name}"
    if re.search(rf"^\s*def {re.escape(name)}\(", source, re.M):
        return None
    return f"{file} has no def {name}"


def check(root: Path, doc: str) -> list[str]:
    problems = []
    in_table = False
    for number, line in enumerate(doc.splitlines(), start=1):
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table:
            in_table = True  # the header row
            continue
        if re.fullmatch(r"[|\s:-]+", line):
            continue  # the separator row
        proofs = PROOF.findall(line)
        if not proofs:
            problems.append(f"docs/guarantees.md:{number}: a promise without a test: {line[:100]}")
        for file, name in proofs:
            why = proof_exists(root, file, name)
            if why:
                problems.append(f"docs/guarantees.md:{number}: {why}")
    return problems


def self_test() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "crates/a/tests").mkdir(parents=True)
        (root / "crates/conformance/src").mkdir(parents=True)
        (root / "e2e/hourglass_e2e").mkdir(parents=True)
        (root / "crates/a/tests/t.rs").write_text(
            "#[tokio::test]\nasync fn kept() {}\n\n#[test]\n#[ignore]\nfn ignored() {}\n\nfn helper() {}\n"
        )
        (root / "crates/conformance/src/s.rs").write_text(
            "pub async fn suite() { called().await; }\nasync fn called() {}\nasync fn uncalled() {}\n"
        )
        (root / "e2e/hourglass_e2e/scenarios.py").write_text('@scenario(1, "steady", "title")\ndef steady(): pass\n')
        good = (
            "| a | b |\n| --- | --- |\n"
            "| x | `crates/a/tests/t.rs::kept`, `crates/conformance/src/s.rs::called` |\n"
            "| y | `e2e/hourglass_e2e/scenarios.py::steady` |\n"
        )
        assert check(root, good) == [], check(root, good)
        for bad, expected in [
            ("| z | `crates/a/tests/t.rs::renamed` |", "no a test"),
            ("| z | `crates/a/tests/t.rs::ignored` |", "no a test"),
            ("| z | `crates/a/tests/t.rs::helper` |", "no a test"),
            ("| z | `crates/conformance/src/s.rs::uncalled` |", "no a case its suite calls"),
            ("| z | `e2e/hourglass_e2e/scenarios.py::gone` |", "no scenario"),
            ("| z | `crates/b/tests/missing.rs::kept` |", "does not exist"),
            ("| z | no proof here |", "without a test"),
        ]:
            problems = check(root, good + bad + "\n")
            assert len(problems) == 1 and expected in problems[0], (bad, problems)
    print("check-guarantees self-test: a good table passes and 7 faults are each caught")


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        self_test()
    problems = check(ROOT, DOC.read_text())
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-guarantees: {len(problems)} problem(s) in docs/guarantees.md", file=sys.stderr)
        return 1
    proofs = len(PROOF.findall(DOC.read_text()))
    print(f"check-guarantees: every promise of docs/guarantees.md names a test; {proofs} proofs found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
