// The plan-violations panel (README: Tracking plans): per hour, the events each tracking-plan version
// checked, and those that broke a rule, by event type, rule and outcome (rejected in enforce mode,
// accepted with a warning otherwise), from GetPlanViolations. Totals are sums of what the service
// returned; an hour counts an event under its first violation only, so the sums add up.
import { RejectionReason } from "./gen/hourglass/v1/ingest_pb.js";
import type { GetPlanViolationsResponse } from "./gen/hourglass/v1/query_pb.js";
import { fromTimestamp } from "./api.js";
import { byId, cell, count, reasonLabel, totalHeading, utcText } from "./format.js";
import { sortableTable } from "./sortable.js";

/** One hour's events checked by one plan version, and how many of them broke a rule. */
interface VersionRow {
  hour: Date;
  version: number;
  checked: bigint;
  rejected: bigint;
  warned: bigint;
}

/** The events of one hour, plan version and type that broke one rule, rejected or warned. */
interface ViolationRow {
  hour: Date;
  version: number;
  type: string;
  rule: RejectionReason;
  outcome: "rejected" | "warned";
  events: bigint;
}

const versionText = (version: number) => `v${version}`;
const plural = (value: bigint | number, word: string) => `${count(value)} ${word}${value === 1 || value === 1n ? "" : "s"}`;
const sum = (values: bigint[]) => values.reduce((total, value) => total + value, 0n);

const violationsTable = sortableTable<ViolationRow>(byId<HTMLTableElement>("plan-violations-table"), {
  initialKey: "hour",
  // Hour, version, type, rule, rejected before warned: the order the service returns them in.
  tieBreak: (a, b) =>
    a.hour.getTime() - b.hour.getTime() ||
    a.version - b.version ||
    a.type.localeCompare(b.type) ||
    a.rule - b.rule ||
    a.outcome.localeCompare(b.outcome),
  render: (tr, row) => {
    cell(tr, utcText(row.hour));
    cell(tr, versionText(row.version), "num");
    cell(tr, row.type);
    cell(tr, reasonLabel(row.rule));
    cell(tr, row.outcome, `outcome-${row.outcome}`);
    cell(tr, count(row.events), "num");
  },
});

export function showPlanViolations(response: GetPlanViolationsResponse) {
  const versionRows = new Map<string, VersionRow>();
  const versionRow = (hour: Date, version: number) => {
    const key = `${hour.getTime()}|${version}`;
    let row = versionRows.get(key);
    if (row === undefined) {
      row = { hour, version, checked: 0n, rejected: 0n, warned: 0n };
      versionRows.set(key, row);
    }
    return row;
  };
  const violations: ViolationRow[] = [];
  for (const hour of response.hours) {
    const start = fromTimestamp(hour.hourStart)!;
    for (const checks of hour.checked) versionRow(start, checks.planVersion).checked += checks.events;
    for (const violation of hour.violations) {
      const row = versionRow(start, violation.planVersion);
      if (violation.rejected) row.rejected += violation.events;
      else row.warned += violation.events;
      violations.push({
        hour: start,
        version: violation.planVersion,
        type: violation.eventType,
        rule: violation.rule,
        outcome: violation.rejected ? "rejected" : "warned",
        events: violation.events,
      });
    }
  }
  const perVersion = [...versionRows.values()].sort(
    (a, b) => a.hour.getTime() - b.hour.getTime() || a.version - b.version,
  );

  const checked = perVersion.length > 0;
  const violated = violations.length > 0;
  byId("plan-empty").hidden = checked;
  byId("plan-checked").hidden = !checked;
  byId("plan-clean").hidden = !checked || violated;
  byId("plan-violations").hidden = !violated;

  showVersions(perVersion);
  violationsTable.show(violations);
  const violationsFoot = byId<HTMLTableElement>("plan-violations-table").tFoot!;
  violationsFoot.replaceChildren();
  if (violated) {
    const tr = violationsFoot.insertRow();
    totalHeading(tr);
    for (let column = 0; column < 4; column += 1) cell(tr, "");
    cell(tr, count(sum(violations.map((row) => row.events))), "num");
  }
  showRules(violations);

  const summary = byId("plan-summary");
  if (!checked) {
    summary.textContent = "";
    return;
  }
  const versions = [...new Set(perVersion.map((row) => row.version))].sort((a, b) => a - b);
  const rejected = sum(perVersion.map((row) => row.rejected));
  const warned = sum(perVersion.map((row) => row.warned));
  const outcome = violated
    ? `${plural(rejected + warned, "violation")}, ${count(rejected)} rejected and ${count(warned)} warned.`
    : "no violations.";
  summary.textContent =
    `${versions.length === 1 ? "Plan" : "Plans"} ${versions.map(versionText).join(", ")} checked ` +
    `${plural(sum(perVersion.map((row) => row.checked)), "event")} in ` +
    `${plural(response.hours.length, "hour")}; ${outcome}`;
}

/** One row per hour and plan version, with a total. */
function showVersions(rows: VersionRow[]) {
  const table = byId<HTMLTableElement>("plan-hours-table");
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = body.insertRow();
    cell(tr, utcText(row.hour));
    cell(tr, versionText(row.version), "num");
    cell(tr, count(row.checked), "num");
    cell(tr, count(row.rejected), "num");
    cell(tr, count(row.warned), "num");
  }
  const foot = table.tFoot!;
  foot.replaceChildren();
  if (rows.length === 0) return;
  const tr = foot.insertRow();
  totalHeading(tr);
  cell(tr, "");
  for (const column of ["checked", "rejected", "warned"] as const) {
    cell(tr, count(sum(rows.map((row) => row[column]))), "num");
  }
}

/** One row per rule over the whole range, rejected and warned apart, in rule order, with a total. */
function showRules(violations: ViolationRow[]) {
  const byRule = new Map<RejectionReason, { rejected: bigint; warned: bigint }>();
  for (const violation of violations) {
    const totals = byRule.get(violation.rule) ?? { rejected: 0n, warned: 0n };
    totals[violation.outcome] += violation.events;
    byRule.set(violation.rule, totals);
  }
  const table = byId<HTMLTableElement>("plan-rules-table");
  const body = table.tBodies[0];
  body.replaceChildren();
  const all = { rejected: 0n, warned: 0n };
  for (const [rule, totals] of [...byRule].sort(([left], [right]) => left - right)) {
    const tr = body.insertRow();
    cell(tr, reasonLabel(rule));
    cell(tr, count(totals.rejected), "num");
    cell(tr, count(totals.warned), "num");
    cell(tr, count(totals.rejected + totals.warned), "num");
    all.rejected += totals.rejected;
    all.warned += totals.warned;
  }
  const foot = table.tFoot!;
  foot.replaceChildren();
  if (byRule.size === 0) return;
  const tr = foot.insertRow();
  totalHeading(tr);
  cell(tr, count(all.rejected), "num");
  cell(tr, count(all.warned), "num");
  cell(tr, count(all.rejected + all.warned), "num");
}
