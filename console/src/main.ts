// The console page: sign in with a query key, pick a range, and show the query service's reports
// (metrics, hour status, ledger, plan violations, raw events). Every figure comes from
// hourglass.v1.QueryService over gRPC-Web; nothing here computes a count the service did not return.
import "./style.css";
import { classify, fromTimestamp, queryClient, toTimestamp, type Failure, type QueryClient } from "./api.js";
import { drawSeries } from "./charts.js";
import { byId, cell, count, reasonLabel, totalHeading, utcText } from "./format.js";
import { showPlanViolations } from "./plans.js";
import { sortableTable } from "./sortable.js";
import { Granularity, HourState, type MetricsRow, type RejectionCount } from "./gen/hourglass/v1/query_pb.js";
import { RejectionReason } from "./gen/hourglass/v1/ingest_pb.js";
import type { Event } from "./gen/hourglass/v1/event_pb.js";

const KEY_STORAGE = "hourglass.console.queryKey";
const HOUR_MS = 3_600_000;

const statusLine = byId<HTMLDivElement>("status");
const alertBox = byId<HTMLDivElement>("alert");

let client: QueryClient | undefined;

// --- Dates: the page's inputs are UTC hours.

/** A datetime-local input's value, read as UTC. */
const inputDate = (input: HTMLInputElement) => new Date(`${input.value}:00Z`);
const setInputDate = (input: HTMLInputElement, date: Date) => {
  input.value = date.toISOString().slice(0, 16);
};
const floorHour = (date: Date) => new Date(Math.floor(date.getTime() / HOUR_MS) * HOUR_MS);

// --- States: loading, error, empty.

let loading = 0;
function setLoading(delta: number) {
  loading += delta;
  document.body.toggleAttribute("aria-busy", loading > 0);
  statusLine.textContent = loading > 0 ? "Loading…" : statusLine.dataset.done ?? "";
}

function showFailure(failure: Failure | undefined) {
  if (failure === undefined) {
    alertBox.hidden = true;
    alertBox.textContent = "";
    delete alertBox.dataset.kind;
    return;
  }
  const explanation = {
    unauthenticated: "This key was not accepted (unknown or revoked). Sign in with a valid query key.",
    permission: "This key may not read reports: it needs the query scope (an ingest key cannot query).",
    unavailable: "The query service is unavailable. Try again in a moment.",
    invalid: "The server refused the request.",
    other: "The request failed.",
  }[failure.kind];
  alertBox.hidden = false;
  alertBox.dataset.kind = failure.kind;
  alertBox.textContent = `${explanation} (${failure.message})`;
  if (failure.kind === "unauthenticated" || failure.kind === "permission") {
    signOut(false);
  }
}

/** Runs `call` with the loading state, and shows its failure; undefined when it failed. */
async function guarded<T>(call: () => Promise<T>): Promise<T | undefined> {
  setLoading(1);
  try {
    return await call();
  } catch (error) {
    showFailure(classify(error));
    return undefined;
  } finally {
    setLoading(-1);
  }
}

// --- Sign in and out. The key lives in session storage only: gone when the tab closes.

function signIn(key: string) {
  sessionStorage.setItem(KEY_STORAGE, key);
  client = queryClient(key);
  byId("sign-in").hidden = true;
  byId("console").hidden = false;
  byId("signed-in").hidden = false;
  byId("key-hint").textContent = `${key.slice(0, 8)}…`;
}

function signOut(clearAlert = true) {
  sessionStorage.removeItem(KEY_STORAGE);
  client = undefined;
  byId("sign-in").hidden = false;
  byId("console").hidden = true;
  byId("signed-in").hidden = true;
  if (clearAlert) showFailure(undefined);
  byId<HTMLInputElement>("query-key").focus();
}

// --- The range and the reports.

interface Range {
  start: Date;
  end: Date;
}

function selectedRange(): Range | undefined {
  const start = inputDate(byId("range-start"));
  const end = inputDate(byId("range-end"));
  if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()) || end <= start) {
    showFailure({ kind: "invalid", message: "the range must end after it starts" });
    return undefined;
  }
  // The service takes whole hours only.
  return { start: floorHour(start), end: floorHour(end) };
}

const timeRange = (range: Range) => ({ start: toTimestamp(range.start), end: toTimestamp(range.end) });

function selectedTypes(): string[] {
  return Array.from(byId<HTMLSelectElement>("event-types").selectedOptions, (option) => option.value);
}

async function loadEventTypes(range: Range) {
  const response = await guarded(() => client!.listEventTypes({ range: timeRange(range) }));
  if (response === undefined) return;
  const select = byId<HTMLSelectElement>("event-types");
  const selected = new Set(selectedTypes());
  select.replaceChildren(
    ...response.eventTypes.map((summary) => {
      const option = new Option(`${summary.eventType} (${count(summary.events)})`, summary.eventType);
      option.selected = selected.has(summary.eventType);
      return option;
    }),
  );
}

interface TableRow {
  period: Date;
  type: string;
  events: bigint;
  users: bigint;
  estimated: boolean;
}

const metricsTable = sortableTable<TableRow>(byId<HTMLTableElement>("metrics-table"), {
  initialKey: "period",
  // Ties keep period then type order, so the table is stable whatever the key.
  tieBreak: (a, b) => a.period.getTime() - b.period.getTime() || a.type.localeCompare(b.type),
  render: (tr, row) => {
    cell(tr, utcText(row.period));
    cell(tr, row.type);
    cell(tr, count(row.events), "num");
    cell(tr, `${row.estimated ? "≈ " : ""}${count(row.users)}`, "num");
  },
});

async function metricsRows(range: Range, groupByType: boolean): Promise<MetricsRow[] | undefined> {
  const granularity = byId<HTMLSelectElement>("granularity").value;
  const eventTypes = selectedTypes();
  if (granularity === "hour") {
    const response = await guarded(() =>
      client!.getHourlyMetrics({ range: timeRange(range), eventTypes, groupByEventType: groupByType }),
    );
    return response?.rows;
  }
  const periods: Record<string, Granularity> = {
    day: Granularity.DAY,
    week: Granularity.WEEK,
    month: Granularity.MONTH,
  };
  const response = await guarded(() =>
    client!.getPeriodMetrics({
      range: timeRange(range),
      granularity: periods[granularity],
      eventTypes,
      groupByEventType: groupByType,
    }),
  );
  return response?.rows.flatMap((row) => (row.metrics === undefined ? [] : [row.metrics]));
}

async function loadMetrics(range: Range) {
  const [totals, byType] = await Promise.all([metricsRows(range, false), metricsRows(range, true)]);
  if (totals === undefined || byType === undefined) return;
  const empty = totals.length === 0;
  byId("metrics-empty").hidden = !empty;
  byId("metrics").hidden = empty;
  const periods = totals.map((row) => fromTimestamp(row.periodStart)!);
  const events = totals.map((row) => Number(row.events));
  const users = totals.map((row) => Number(row.distinctUsers));
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
  const estimated = totals.some((row) => row.distinctUsersEstimated);
  byId("events-caption").textContent =
    `Events: ${count(sum(events))} in ${periods.length} period${periods.length === 1 ? "" : "s"}` +
    (periods.length > 0 ? `, at most ${count(Math.max(...events))} in one` : "");
  byId("users-caption").textContent =
    `Unique users per period: at most ${count(periods.length > 0 ? Math.max(...users) : 0)}` +
    (estimated ? " (estimated: merged sketches)" : "");
  drawSeries("events-chart", "Events", periods, events, "#1f5fbf");
  drawSeries("users-chart", "Unique users", periods, users, "#a33a00");
  metricsTable.show(
    byType.map((row) => ({
      period: fromTimestamp(row.periodStart)!,
      type: row.eventType,
      events: row.events,
      users: row.distinctUsers,
      estimated: row.distinctUsersEstimated,
    })),
  );
}

const stateNames: Record<HourState, string> = {
  [HourState.UNSPECIFIED]: "unknown",
  [HourState.PENDING]: "pending",
  [HourState.PROVISIONAL]: "provisional",
  [HourState.FINAL]: "final",
};

async function loadHourStatus(range: Range) {
  const response = await guarded(() => client!.getHourStatus({ range: timeRange(range) }));
  if (response === undefined) return;
  byId("hours-empty").hidden = response.hours.length > 0;
  const body = byId<HTMLTableElement>("hours-table").tBodies[0];
  body.replaceChildren();
  for (const hour of response.hours) {
    const start = fromTimestamp(hour.hourStart)!;
    const tr = body.insertRow();
    cell(tr, utcText(start));
    cell(tr, stateNames[hour.state], `state state-${stateNames[hour.state]}`);
    cell(tr, String(hour.revision), "num");
    cell(tr, String(hour.logicVersion), "num");
    cell(tr, count(hour.events), "num");
    cell(tr, utcText(fromTimestamp(hour.computedAt)));
    cell(tr, utcText(fromTimestamp(hour.finalAsOf)));
    const notes = [
      hour.reaggregationPending ? "new data: re-aggregation pending" : "",
      hour.refusedReason ? `refused: ${hour.refusedReason}` : "",
    ].filter(Boolean);
    cell(tr, notes.join("; "));
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Raw events";
    button.setAttribute("aria-label", `Raw events of ${utcText(start)}`);
    button.addEventListener("click", () => {
      setInputDate(byId("raw-hour"), start);
      void loadRawPage(true);
      byId("raw-title").scrollIntoView();
    });
    tr.insertCell().append(button);
  }
}

/** The ledger's rejections of one hour (or the total), one list item per reason, in reason order. */
function reasonsCell(row: HTMLTableRowElement, byReason: Map<RejectionReason, bigint>, className: string) {
  const td = row.insertCell();
  td.className = className;
  if (byReason.size === 0) {
    td.textContent = "none";
    td.classList.add("none");
    return;
  }
  const list = document.createElement("ul");
  for (const [reason, events] of [...byReason].sort(([left], [right]) => left - right)) {
    const item = document.createElement("li");
    item.textContent = `${reasonLabel(reason)}: ${count(events)}`;
    list.append(item);
  }
  td.append(list);
}

const reasonMap = (counts: RejectionCount[]) => new Map(counts.map((entry) => [entry.reason, entry.events]));

async function loadLedger(range: Range) {
  const response = await guarded(() => client!.getLedger({ range: timeRange(range) }));
  if (response === undefined) return;
  const body = byId<HTMLTableElement>("ledger-table").tBodies[0];
  body.replaceChildren();
  const totals = { received: 0n, accepted: 0n, rejected: 0n, throttled: 0n, stored: 0n, counted: 0n };
  const totalByReason = new Map<RejectionReason, bigint>();
  // The columns in table order: the breakdown of rejected follows its total.
  const columns = ["received", "accepted", "rejected", "byReason", "throttled", "stored", "counted"] as const;
  let mismatches = 0;
  for (const row of response.rows) {
    const byReason = reasonMap(row.rejectedByReason);
    const reasonsSum = [...byReason.values()].reduce((sum, events) => sum + events, 0n);
    const problems = [
      row.received === row.accepted + row.rejected + row.throttled ? "" : "received ≠ accepted + rejected + throttled",
      reasonsSum === row.rejected ? "" : "rejected ≠ the sum of its reasons",
      row.balanced ? "" : "stored ≠ counted",
    ].filter(Boolean);
    const balanced = problems.length === 0;
    const tr = body.insertRow();
    tr.className = balanced ? "balanced" : "mismatch";
    cell(tr, utcText(fromTimestamp(row.hourStart)));
    for (const column of columns) {
      if (column === "byReason") {
        reasonsCell(tr, byReason, "reasons");
        continue;
      }
      cell(tr, count(row[column]), "num");
      totals[column] += row[column];
    }
    for (const [reason, events] of byReason) totalByReason.set(reason, (totalByReason.get(reason) ?? 0n) + events);
    cell(tr, row.final ? "final" : "not yet");
    cell(tr, balanced ? "balanced" : `mismatch: ${problems.join("; ")}`);
    if (!balanced) mismatches += 1;
  }
  const foot = byId<HTMLTableElement>("ledger-table").tFoot!;
  foot.replaceChildren();
  if (response.rows.length > 0) {
    const tr = foot.insertRow();
    totalHeading(tr);
    for (const column of columns) {
      if (column === "byReason") reasonsCell(tr, totalByReason, "reasons");
      else cell(tr, count(totals[column]), "num");
    }
    cell(tr, "");
    cell(tr, mismatches === 0 ? "balanced" : `${mismatches} mismatched`);
  }
  const summary = byId("ledger-summary");
  summary.textContent =
    response.rows.length === 0
      ? "No hour in this range received events."
      : mismatches === 0
        ? `All ${response.rows.length} hours balance.`
        : `${mismatches} of ${response.rows.length} hours do not balance.`;
  summary.className = `summary ${mismatches === 0 ? "ok" : "bad"}`;
}

async function loadPlanViolations(range: Range) {
  const response = await guarded(() => client!.getPlanViolations({ range: timeRange(range) }));
  if (response === undefined) return;
  showPlanViolations(response);
}

async function refresh() {
  const range = selectedRange();
  if (range === undefined || client === undefined) return;
  showFailure(undefined);
  statusLine.dataset.done = "";
  await loadEventTypes(range);
  if (client === undefined) return;
  await Promise.all([loadMetrics(range), loadHourStatus(range), loadLedger(range), loadPlanViolations(range)]);
  if (client !== undefined && alertBox.hidden) {
    statusLine.dataset.done = `Showing ${utcText(range.start)} to ${utcText(range.end)} UTC.`;
    statusLine.textContent = statusLine.dataset.done;
  }
}

// --- Raw events: one hour, a page at a time, following the service's page tokens.

let rawNextToken = "";
let rawPage = 0;
let rawSeen = 0;

async function loadRawPage(first: boolean) {
  if (client === undefined) return;
  const hour = floorHour(inputDate(byId("raw-hour")));
  if (Number.isNaN(hour.getTime())) return;
  showFailure(undefined);
  if (first) {
    rawNextToken = "";
    rawPage = 0;
    rawSeen = 0;
  }
  const pageSize = Number(byId<HTMLInputElement>("raw-page-size").value) || 50;
  const eventType = byId<HTMLInputElement>("raw-type").value.trim();
  const token = rawNextToken;
  const response = await guarded(() =>
    client!.listRawEvents({ hourStart: toTimestamp(hour), eventType, pageSize, pageToken: token }),
  );
  if (response === undefined) return;
  rawPage += 1;
  const from = rawSeen + 1;
  rawSeen += response.events.length;
  rawNextToken = response.nextPageToken;
  const body = byId<HTMLTableElement>("raw-table").tBodies[0];
  body.replaceChildren();
  for (const raw of response.events) {
    const event = raw.event as Event | undefined;
    const tr = body.insertRow();
    cell(tr, event?.eventId ?? "", "mono");
    cell(tr, event?.eventType ?? "");
    cell(tr, fromTimestamp(event?.occurredAt)?.toISOString() ?? "");
    cell(tr, event?.userId ?? "");
    const properties = Object.entries(event?.properties ?? {}).map(
      ([name, value]) => `${name}=${String(value.kind.value)}`,
    );
    cell(tr, properties.join(", "));
    cell(tr, raw.batchId, "mono");
  }
  const last = rawNextToken === "";
  byId<HTMLButtonElement>("raw-next").disabled = last;
  byId("raw-position").textContent =
    response.events.length === 0
      ? `${utcText(hour)}: no raw events.`
      : `${utcText(hour)}, page ${rawPage}: events ${from}–${rawSeen}${last ? ` of ${rawSeen} (last page)` : ""}.`;
}

// --- Wiring.

function defaultRange() {
  const nextHour = new Date(floorHour(new Date()).getTime() + HOUR_MS);
  setInputDate(byId("range-start"), new Date(nextHour.getTime() - 24 * HOUR_MS));
  setInputDate(byId("range-end"), nextHour);
  setInputDate(byId("raw-hour"), floorHour(new Date()));
}

byId("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = byId<HTMLInputElement>("query-key").value.trim();
  if (key === "") return;
  byId<HTMLInputElement>("query-key").value = "";
  showFailure(undefined);
  signIn(key);
  void refresh();
});
byId("sign-out").addEventListener("click", () => signOut());
byId("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  void refresh();
});
byId("raw-form").addEventListener("submit", (event) => {
  event.preventDefault();
  void loadRawPage(true);
});
byId("raw-next").addEventListener("click", () => void loadRawPage(false));

// Deep links for bookmarks and the browser test: ?from=…&to=…&granularity=… (UTC, datetime-local form).
const params = new URLSearchParams(window.location.search);
defaultRange();
if (params.get("from")) byId<HTMLInputElement>("range-start").value = params.get("from")!;
if (params.get("to")) byId<HTMLInputElement>("range-end").value = params.get("to")!;
if (params.get("granularity")) byId<HTMLSelectElement>("granularity").value = params.get("granularity")!;

const storedKey = sessionStorage.getItem(KEY_STORAGE);
if (storedKey) {
  signIn(storedKey);
  void refresh();
} else {
  signOut();
}
