#!/usr/bin/env python3
"""Checks docs/tracking-plan.schema.json against the example plans beside it.

Every plan in docs/tracking-plans/ must be valid under the schema and every plan in
docs/tracking-plans/invalid/ invalid; crates/core's test `the_example_plans_parse_as_the_schema_says`
holds the parser (`PlanDocument::parse`) to the same examples, so the schema and the parser cannot
drift apart unnoticed. Needs the `jsonschema` package: scripts/test.sh runs it with the e2e venv's python, where
e2e/requirements.txt pins it.
"""

import json
import pathlib
import sys

import jsonschema

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    schema = json.loads((ROOT / "docs/tracking-plan.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    failures = []
    examples = sorted((ROOT / "docs/tracking-plans").glob("*.json"))
    invalid_examples = sorted((ROOT / "docs/tracking-plans/invalid").glob("*.json"))
    if not examples or not invalid_examples:
        failures.append("no example plans found under docs/tracking-plans/")
    for path in examples:
        errors = list(validator.iter_errors(json.loads(path.read_text())))
        if errors:
            failures.append(f"{path.relative_to(ROOT)}: valid example refused: {errors[0].message}")
    for path in invalid_examples:
        if validator.is_valid(json.loads(path.read_text())):
            failures.append(f"{path.relative_to(ROOT)}: invalid example accepted by the schema")
    for failure in failures:
        print(failure, file=sys.stderr)
    if not failures:
        print(f"tracking-plan schema: {len(examples)} valid and {len(invalid_examples)} invalid examples as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
