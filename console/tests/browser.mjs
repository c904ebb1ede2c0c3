// The console's browser test (README: the web console): a real `hourglass standalone` fed with known events,
// the built page in headless Chromium (Debian's `chromium`, driven by playwright-core), and the figures on
// the page checked against the events sent: exact counts in the chart captions and the table, a ledger
// that balances with its rejected events by reason, the error states of a wrong key, a wrong-scope key and a stopped server, the empty
// state, the raw-events view paging through one hour with every event exactly once, and the plan-violations
// panel's every cell after a tracking plan pushed with `hourglass plans push` (enforce, then warn) checked
// known events.
//
//   HOURGLASS_BIN=target/debug/hourglass node console/tests/browser.mjs
//
// Screenshots go to $HOURGLASS_CONSOLE_SCREENSHOTS (default $CARGO_TARGET_DIR/console-screenshots).
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const HOUR_MS = 3_600_000;
const WAIT_MS = 120_000;

const hourglass = resolve(process.env.HOURGLASS_BIN ?? "target/debug/hourglass");
const chromiumPath = process.env.HOURGLASS_CHROMIUM ?? "/usr/bin/chromium";
const screenshots = resolve(
  process.env.HOURGLASS_CONSOLE_SCREENSHOTS ??
    join(process.env.CARGO_TARGET_DIR ?? "target", "console-screenshots"),
);

const log = (...parts) => console.log("console test:", ...parts);

for (const [what, path] of [["the hourglass binary (HOURGLASS_BIN)", hourglass], ["Chromium (HOURGLASS_CHROMIUM)", chromiumPath]]) {
  if (!existsSync(path)) {
    console.error(`console test: ${what} not found at ${path}`);
    process.exit(2);
  }
}

async function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

async function waitFor(what, probe, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((done) => setTimeout(done, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// --- The known events: three final hours, three types, a known set of users, rejected events of three reasons.

const utcInput = (date) => date.toISOString().slice(0, 16);
const utcText = (date) => date.toISOString().slice(0, 16).replace("T", " ");
const thisHour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
// Hours that closed more than the aggregator's allowed lateness (10 minutes by default) ago, so they are final.
const hours = [4, 3, 2].map((ago) => new Date(thisHour - ago * HOUR_MS));
const rangeEnd = new Date(hours[2].getTime() + HOUR_MS);
// Per hour: [event type, events, users (the first `users` of u0, u1, …, used round-robin)].
const plan = [
  [["page_view", 23, 5], ["signup", 4, 4]],
  [["page_view", 41, 7], ["checkout", 6, 2], ["signup", 1, 1]],
  [["page_view", 17, 3], ["checkout", 9, 9]],
];
const events = [];
plan.forEach((types, hourIndex) => {
  for (const [eventType, count, users] of types) {
    for (let index = 0; index < count; index += 1) {
      events.push({
        event_id: `console-${hourIndex}-${eventType}-${index}`,
        event_type: eventType,
        // Spread over the hour, never on its last second.
        occurred_at: new Date(hours[hourIndex].getTime() + (index * 47_000) % (HOUR_MS - 1000)).toISOString(),
        user_id: `u${index % users}`,
        properties: { amount: index, plan: index % 2 ? "pro" : "free" },
      });
    }
  }
});
// Rejected by the collector: received and rejected in the ledger, by reason, never stored. A field's
// rejection counts in the event's hour (an empty type, and twice an empty property name, in hours[1]); a
// time's in the hour the collector received it (a day in the future: the hour of sending).
const inHour1 = new Date(hours[1].getTime() + 60_000).toISOString();
const rejected = [
  { event_id: "console-rejected-type", event_type: "", occurred_at: inHour1 },
  { event_id: "console-rejected-name-0", event_type: "page_view", occurred_at: inHour1, properties: { "": 1 } },
  { event_id: "console-rejected-name-1", event_type: "signup", occurred_at: inHour1, properties: { "": "x" } },
  { event_id: "console-rejected-future", event_type: "page_view", occurred_at: new Date(Date.now() + 24 * HOUR_MS).toISOString() },
];
// What the ledger's "Rejected by reason" cell of hours[1] lists, in reason order.
const hour1Reasons = "event type empty: 1; property name invalid: 2";

const hourOf = (event) => Math.floor(Date.parse(event.occurred_at) / HOUR_MS) * HOUR_MS;
const expectedPerHour = hours.map((hour) => events.filter((event) => hourOf(event) === hour.getTime()));

// --- A tracking plan (README: Tracking plans), pushed for the demo customer after the events above, so they
// are checked by none: v1 in enforce mode, then v2, the same rules in warn mode. Their events fall in hours of
// their own, before the three above: planHours[0] only valid events, then violations of all eight rules.
const planHours = [8, 7, 6, 5].map((ago) => new Date(thisHour - ago * HOUR_MS));
const planV1 = {
  mode: "enforce",
  undeclared_event_types: "reject",
  undeclared_properties: "warn",
  event_types: {
    page_view: { properties: { path: { type: "string", required: true } } },
    purchase: {
      properties: {
        price: { type: "number", required: true, minimum: 0 },
        currency: { type: "string", required: true, enum: ["EUR", "USD"] },
        sku: { type: "string", max_length: 8, pattern: "^[A-Z0-9-]+$" },
      },
    },
  },
};
const planV2 = { ...planV1, mode: "warn", undeclared_event_types: "warn" };
// The rules as the console names them, in RejectionReason order (the order the page lists them in).
const rules = [
  "event type undeclared",
  "property undeclared",
  "property required missing",
  "property type mismatch",
  "property not in enum",
  "property out of range",
  "property too long",
  "property pattern mismatch",
];
const purchase = { price: 12.5, currency: "EUR", sku: "AB-12" };
// [plan version, index in planHours, event type, events, properties, the one rule they break, its outcome].
// v1 rejects all but an undeclared property (warned); v2, in warn mode, accepts every event.
const planGroups = [
  [1, 1, "purchase", 5, purchase],
  [1, 1, "purchase", 3, { ...purchase, price: "12" }, "property type mismatch", "rejected"],
  [1, 1, "purchase", 2, { ...purchase, currency: "JPY" }, "property not in enum", "rejected"],
  [1, 1, "page_view", 4, { path: "/" }],
  [1, 1, "page_view", 1, {}, "property required missing", "rejected"],
  [1, 1, "page_view", 2, { path: "/", color: "red" }, "property undeclared", "warned"],
  [1, 2, "signup", 4, {}, "event type undeclared", "rejected"],
  [1, 2, "purchase", 1, { ...purchase, price: -1 }, "property out of range", "rejected"],
  [1, 2, "purchase", 2, { ...purchase, sku: "ABCDEFGHIJ" }, "property too long", "rejected"],
  [1, 2, "purchase", 1, { ...purchase, sku: "ab" }, "property pattern mismatch", "rejected"],
  [1, 2, "purchase", 1, { ...purchase, price: "7" }, "property type mismatch", "rejected"],
  [1, 2, "purchase", 3, purchase],
  [2, 0, "page_view", 3, { path: "/" }],
  [2, 2, "purchase", 2, { ...purchase, price: "x" }, "property type mismatch", "warned"],
  [2, 2, "page_view", 3, { path: "/b" }],
  [2, 3, "signup", 3, {}, "event type undeclared", "warned"],
  [2, 3, "purchase", 1, { ...purchase, currency: "JPY" }, "property not in enum", "warned"],
  [2, 3, "page_view", 6, { path: "/a" }],
  [2, 3, "purchase", 2, purchase],
];
const planEvents = (version) =>
  planGroups
    .filter(([groupVersion]) => groupVersion === version)
    .flatMap(([, hourIndex, eventType, count, properties], groupIndex) =>
      Array.from({ length: count }, (_, index) => ({
        event_id: `console-plan-v${version}-${groupIndex}-${index}`,
        event_type: eventType,
        occurred_at: new Date(planHours[hourIndex].getTime() + (groupIndex * 60 + index) * 1000).toISOString(),
        user_id: `u${index}`,
        properties,
      })),
    );

// --- The tracking plan's part: push, send, and check the plan-violations panel.

/** `hourglass send`'s summary of a file of events: [accepted, rejected]. */
async function sendFile(name, fileEvents, ingestKey) {
  const file = join(dataDir, name);
  writeFileSync(file, fileEvents.map((event) => JSON.stringify(event)).join("\n") + "\n");
  const { stdout } = await promisify(execFile)(hourglass, [
    "send", "--target", origin, "--api-key", ingestKey, "--file", file, "--batch-size", "10",
  ]);
  const figure = (name) => Number(stdout.match(new RegExp(`^  ${name} +(\\d+)$`, "m"))[1]);
  return [figure("accepted"), figure("rejected")];
}

async function pushPlan(version, plan) {
  const file = join(dataDir, `plan-v${version}.json`);
  writeFileSync(file, JSON.stringify(plan));
  const { stdout } = await promisify(execFile)(hourglass, [
    "plans", "push", "--customer", "demo", "--data-dir", dataDir, file,
  ]);
  assert.match(stdout, /^pushed plan/, `plans push v${version}`);
}

/** Sends one event of an undeclared type, in an hour no check reads, until `done` holds for its ack
 * (v1 rejects it, v2 accepts it): the collector then uses the version just pushed. */
let probes = 0;
async function waitForPlan(what, ingestKey, done) {
  await waitFor(what, async () => {
    probes += 1;
    const probe = {
      event_id: `console-plan-probe-${probes}`,
      event_type: "plan_probe",
      occurred_at: new Date(thisHour - 12 * HOUR_MS).toISOString(),
    };
    const [accepted, rejected] = await sendFile("plan-probe.jsonl", [probe], ingestKey);
    return done(accepted, rejected);
  });
}

async function checkPlanViolations(page, show, tableText, ingestKey) {
  const groupEvents = (group) => group[3];
  const sumOf = (groups) => groups.reduce((total, group) => total + groupEvents(group), 0);
  await pushPlan(1, planV1);
  await waitForPlan("plan v1 (enforce) at the collector", ingestKey, (accepted, rejected) => rejected === 1);
  const v1Groups = planGroups.filter((group) => group[0] === 1);
  const v1Rejected = sumOf(v1Groups.filter((group) => group[6] === "rejected"));
  assert.deepEqual(await sendFile("plan-v1.jsonl", planEvents(1), ingestKey), [sumOf(v1Groups) - v1Rejected, v1Rejected]);
  await pushPlan(2, planV2);
  await waitForPlan("plan v2 (warn) at the collector", ingestKey, (accepted) => accepted === 1);
  const v2Groups = planGroups.filter((group) => group[0] === 2);
  assert.deepEqual(await sendFile("plan-v2.jsonl", planEvents(2), ingestKey), [sumOf(v2Groups), 0]);
  log(`plan: sent ${sumOf(planGroups)} events checked by v1 and v2, ${probes} probes`);

  // What the ledger and the panel must show, from planGroups alone.
  const inHour = (hourIndex) => planGroups.filter((group) => group[1] === hourIndex);
  const rejectedIn = (groups) => groups.filter((group) => group[6] === "rejected");
  const reasonsText = (groups) => {
    const text = rules
      .map((rule) => [rule, sumOf(groups.filter((group) => group[5] === rule))])
      .filter(([, events]) => events > 0)
      .map(([rule, events]) => `${rule}: ${events}`)
      .join("; ");
    return text === "" ? "none" : text;
  };
  await page.goto(`${origin}/console/?from=${utcInput(planHours[0])}&to=${utcInput(new Date(planHours[3].getTime() + HOUR_MS))}`);
  await waitFor("the plan's hours final, counted, their rejections in the ledger", async () => {
    await show();
    const ledger = await tableText("#ledger-table");
    const expected = planHours.map((hour, hourIndex) => {
      const groups = inHour(hourIndex);
      const stored = String(sumOf(groups) - sumOf(rejectedIn(groups)));
      return [utcText(hour), String(sumOf(groups)), stored, String(sumOf(rejectedIn(groups))),
        reasonsText(rejectedIn(groups)), "0", stored, stored, "final", "balanced"];
    });
    if (JSON.stringify(ledger) !== JSON.stringify(expected)) {
      throw new Error(`ledger ${JSON.stringify(ledger)}, expected ${JSON.stringify(expected)}`);
    }
    return true;
  });

  // Per hour and plan version: the events it checked (every event of the hour reached the plan), rejected, warned.
  const versionRows = [];
  planHours.forEach((hour, hourIndex) => {
    for (const version of [1, 2]) {
      const groups = inHour(hourIndex).filter((group) => group[0] === version);
      if (groups.length === 0) continue;
      versionRows.push([utcText(hour), `v${version}`, String(sumOf(groups)),
        String(sumOf(rejectedIn(groups))), String(sumOf(groups.filter((group) => group[6] === "warned")))]);
    }
  });
  const violating = planGroups.filter((group) => group[5] !== undefined);
  const totalRejected = sumOf(rejectedIn(planGroups));
  const totalWarned = sumOf(violating) - totalRejected;
  assert.deepEqual(await tableText("#plan-hours-table"), versionRows, "the plan panel: hours and versions");
  assert.deepEqual(
    await tableText("#plan-hours-table", "tfoot"),
    [["Total", "", String(sumOf(planGroups)), String(totalRejected), String(totalWarned)]],
  );
  // Violations: one row per hour, version, type, rule and outcome (every group here is its own), in that order.
  const ruleIndex = (rule) => rules.indexOf(rule);
  const violationRows = [...violating]
    .sort((a, b) => a[1] - b[1] || a[0] - b[0] || a[2].localeCompare(b[2]) || ruleIndex(a[5]) - ruleIndex(b[5]))
    .map(([version, hourIndex, eventType, events, , rule, outcome]) =>
      [utcText(planHours[hourIndex]), `v${version}`, eventType, rule, outcome, String(events)]);
  assert.deepEqual(await tableText("#plan-violations-table"), violationRows, "the plan panel: violations");
  assert.deepEqual(
    await tableText("#plan-violations-table", "tfoot"),
    [["Total", "", "", "", "", String(sumOf(violating))]],
  );
  // Per rule over the range: all eight, rejected and warned apart.
  const ruleRows = rules.map((rule) => {
    const groups = violating.filter((group) => group[5] === rule);
    const rejected = sumOf(rejectedIn(groups));
    return [rule, String(rejected), String(sumOf(groups) - rejected), String(sumOf(groups))];
  });
  assert.deepEqual(await tableText("#plan-rules-table"), ruleRows, "the plan panel: per rule");
  assert.deepEqual(
    await tableText("#plan-rules-table", "tfoot"),
    [["Total", String(totalRejected), String(totalWarned), String(sumOf(violating))]],
  );
  assert.equal(
    await page.locator("#plan-summary").textContent(),
    `Plans v1, v2 checked ${sumOf(planGroups)} events in 4 hours; ${sumOf(violating)} violations, ` +
      `${totalRejected} rejected and ${totalWarned} warned.`,
  );
  assert(!(await page.locator("#plan-empty").isVisible()) && !(await page.locator("#plan-clean").isVisible()));
  await page.locator('section[aria-labelledby="plan-title"]').screenshot({ path: join(screenshots, "console-plan-violations.png") });

  // Sorting by events, from the keyboard: descending after the second Enter.
  const eventsHeading = page.locator('#plan-violations-table th[data-key="events"]');
  await eventsHeading.getByRole("button").press("Enter");
  assert.equal(await eventsHeading.getAttribute("aria-sort"), "ascending");
  await eventsHeading.getByRole("button").press("Enter");
  assert.equal(await eventsHeading.getAttribute("aria-sort"), "descending");
  const byEvents = (await tableText("#plan-violations-table")).map((row) => Number(row[5]));
  assert.deepEqual(byEvents, violationRows.map((row) => Number(row[5])).sort((a, b) => b - a));

  // An hour the plan checked with no violation: the panel's second empty state, under its version's row.
  await page.goto(`${origin}/console/?from=${utcInput(planHours[0])}&to=${utcInput(planHours[1])}`);
  await page.locator("#status").filter({ hasText: "Showing" }).waitFor();
  const clean = sumOf(inHour(0));
  assert.deepEqual(await tableText("#plan-hours-table"), [[utcText(planHours[0]), "v2", String(clean), "0", "0"]]);
  assert(await page.locator("#plan-clean").isVisible(), "no violations: the panel says so");
  assert(!(await page.locator("#plan-violations").isVisible()), "no violations: no violation tables");
  assert.equal(await page.locator("#plan-summary").textContent(), `Plan v2 checked ${clean} events in 1 hour; no violations.`);
}

// --- Standalone.

const dataDir = mkdtempSync(join(tmpdir(), "hourglass-console-"));
const port = await freePort();
const address = `127.0.0.1:${port}`;
const origin = `http://${address}`;
let standaloneExited = false;
const standalone = spawn(hourglass, ["standalone", "--data-dir", dataDir, "--listen-addr", address], {
  stdio: ["ignore", "pipe", "pipe"],
  // A pushed plan applies within a second (the wait for it is a condition, not this figure).
  env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", HOURGLASS_PLAN_CACHE_TTL_SECS: "1" },
});
const standaloneLog = [];
standalone.stdout.on("data", (chunk) => standaloneLog.push(chunk.toString()));
standalone.stderr.on("data", (chunk) => standaloneLog.push(chunk.toString()));
standalone.on("exit", () => {
  standaloneExited = true;
});

let browser;
let failed = false;
try {
  log(`standalone on ${origin}, data in ${dataDir}`);
  await waitFor("the console page", async () => {
    assert(!standaloneExited, "standalone exited");
    return (await fetch(`${origin}/console/`)).status === 200;
  });
  await waitFor("health SERVING", async () => {
    await promisify(execFile)(hourglass, ["health", "--target", origin]);
    return true;
  });
  const keys = readFileSync(join(dataDir, "demo-keys.txt"), "utf8");
  const key = (scope) => keys.match(new RegExp(`^${scope}: (\\S+)$`, "m"))[1];
  const ingestKey = key("ingest");
  const queryKey = key("query");

  const eventsFile = join(dataDir, "console-events.jsonl");
  writeFileSync(eventsFile, [...events, ...rejected].map((event) => JSON.stringify(event)).join("\n") + "\n");
  const sent = await promisify(execFile)(hourglass, [
    "send", "--target", origin, "--api-key", ingestKey, "--file", eventsFile, "--batch-size", "10",
  ]);
  log(`sent ${events.length} events and ${rejected.length} invalid ones:`, sent.stdout.trim().split("\n").slice(-2).join(" | "));

  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
  mkdirSync(screenshots, { recursive: true });

  // --- Signed in with the query key: wait until the three hours are final and counted.
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  page.on("console", (message) => message.type() === "error" && pageErrors.push(message.text()));
  const rangeQuery = `from=${utcInput(hours[0])}&to=${utcInput(rangeEnd)}`;
  await page.goto(`${origin}/console/?${rangeQuery}`);
  // Keyboard only: the key field, then Enter submits the form.
  await page.getByLabel("Query API key").fill(queryKey);
  await page.getByLabel("Query API key").press("Enter");
  await page.getByRole("heading", { name: "Reconciliation ledger" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("hourglass.console.queryKey")), queryKey);
  assert.equal(await page.evaluate(() => localStorage.length), 0, "the key is in session storage only");

  const show = async () => {
    await page.getByRole("button", { name: "Show", exact: true }).click();
    await page.waitForFunction(() => !document.body.hasAttribute("aria-busy"));
    // On a timeout, say what the status line shows instead (an error the console got, or a busy state).
    await page
      .locator("#status")
      .filter({ hasText: "Showing" })
      .waitFor({ timeout: 10_000 })
      .catch(async (error) => {
        const status = (await page.locator("#status").textContent())?.trim();
        const alert = (await page.locator("#alert").textContent())?.trim();
        throw new Error(
          `the console's status reads "${status}", not "Showing ...", its alert "${alert}" (${error.message.split("\n")[0]})`,
        );
      });
  };
  // A cell's text; a cell holding a list (the ledger's rejections by reason) reads as its items joined by "; ".
  const tableText = (selector, part = "tbody") =>
    page.$$eval(`${selector} ${part} tr`, (rows) =>
      rows.map((row) =>
        Array.from(row.cells, (cell) => {
          const items = Array.from(cell.querySelectorAll("li"), (item) => item.textContent.trim());
          return items.length > 0 ? items.join("; ") : cell.textContent.trim();
        }),
      ),
    );

  await waitFor("three final hours, counted and balanced", async () => {
    await show();
    const status = await tableText("#hours-table");
    const ledger = await tableText("#ledger-table");
    const done =
      status.length === 3 &&
      status.every((row) => row[1] === "final") &&
      ledger.length === 3 &&
      ledger.every((row, index) => row[7] === String(expectedPerHour[index].length));
    // Not done yet: what the page shows, for the timeout's message.
    if (!done) throw new Error(`hour status ${JSON.stringify(status)}, ledger ${JSON.stringify(ledger)}`);
    return done;
  });

  // The chart captions: the exact total and the largest hour.
  const perHourTotals = expectedPerHour.map((hourEvents) => hourEvents.length);
  const total = perHourTotals.reduce((sum, value) => sum + value, 0);
  assert.equal(
    await page.locator("#events-caption").textContent(),
    `Events: ${total} in 3 periods, at most ${Math.max(...perHourTotals)} in one`,
  );
  const perHourUsers = expectedPerHour.map((hourEvents) => new Set(hourEvents.map((event) => event.user_id)).size);
  assert.equal(
    await page.locator("#users-caption").textContent(),
    `Unique users per period: at most ${Math.max(...perHourUsers)}`,
  );
  assert.equal(await page.locator("#events-chart canvas").count(), 1, "the events chart is drawn");
  assert.equal(await page.locator("#users-chart canvas").count(), 1, "the users chart is drawn");

  // The table: one row per hour and type, exact events and unique users, in period then type order.
  const expectedRows = plan.flatMap((types, hourIndex) =>
    types
      .map(([eventType, count, users]) => [utcText(hours[hourIndex]), eventType, String(count), String(users)])
      .sort((a, b) => a[1].localeCompare(b[1])),
  );
  assert.deepEqual(await tableText("#metrics-table"), expectedRows);
  // Sorting: by events, descending after a second activation (keyboard: Enter on the heading's button).
  const eventsHeading = page.locator('#metrics-table th[data-key="events"]');
  await eventsHeading.getByRole("button").click();
  assert.equal(await eventsHeading.getAttribute("aria-sort"), "ascending");
  await eventsHeading.getByRole("button").press("Enter");
  assert.equal(await eventsHeading.getAttribute("aria-sort"), "descending");
  const byEvents = (await tableText("#metrics-table")).map((row) => Number(row[2]));
  assert.deepEqual(byEvents, [...expectedRows.map((row) => Number(row[2]))].sort((a, b) => b - a));

  // The ledger: every hour balances, with the events rejected in their hour received and rejected, by reason.
  const ledger = await tableText("#ledger-table");
  ledger.forEach((row, index) => {
    const stored = String(expectedPerHour[index].length);
    const [rejectedHere, reasons] = index === 1 ? [3, hour1Reasons] : [0, "none"];
    assert.deepEqual(
      row,
      [
        utcText(hours[index]),
        String(expectedPerHour[index].length + rejectedHere),
        stored,
        String(rejectedHere),
        reasons,
        "0",
        stored,
        stored,
        "final",
        "balanced",
      ],
      `ledger row ${index}`,
    );
  });
  const ledgerTotal = (await tableText("#ledger-table", "tfoot"))[0];
  assert.deepEqual(ledgerTotal.slice(3, 5), ["3", hour1Reasons], "the total rejected, by reason");
  assert.equal(await page.locator("#ledger-summary").textContent(), "All 3 hours balance.");
  assert.equal(await page.locator("#ledger-table tr.mismatch").count(), 0);
  // No plan checked these events: the plan panel's first empty state.
  assert(await page.locator("#plan-empty").isVisible(), "no plan: the plan panel says so");
  assert(!(await page.locator("#plan-checked").isVisible()), "no plan: no plan tables");
  assert.equal(await page.locator("#plan-summary").textContent(), "");
  await page.screenshot({ path: join(screenshots, "console-hourly.png"), fullPage: true });
  // The README's picture (docs/console.png is a copy): the range, the charts and the table.
  await page.screenshot({ path: join(screenshots, "console-readme.png"), clip: { x: 0, y: 0, width: 1280, height: 640 } });

  // Days: the same events summed per UTC day (the three hours may straddle midnight).
  await page.getByLabel("Granularity").selectOption("day");
  await show();
  const perDay = new Map();
  for (const event of events) {
    const day = `${event.occurred_at.slice(0, 10)} 00:00`;
    const typeKey = `${day}|${event.event_type}`;
    perDay.set(typeKey, (perDay.get(typeKey) ?? 0) + 1);
  }
  const dayRows = (await tableText("#metrics-table")).map((row) => [`${row[0]}|${row[1]}`, Number(row[2])]);
  assert.deepEqual(new Map(dayRows), perDay);
  await page.getByLabel("Granularity").selectOption("hour");

  // Raw events of the busiest hour, 7 a page: every stored event exactly once, then no next page.
  await page.locator("#hours-table tbody tr").nth(1).getByRole("button", { name: /Raw events/ }).click();
  await page.locator("#raw-position").filter({ hasText: "page 1" }).waitFor();
  await page.getByLabel("Events per page").fill("7");
  await page.getByRole("button", { name: "Show first page" }).click();
  await page.locator("#raw-position").filter({ hasText: "page 1: events 1–7" }).waitFor();
  const seen = [];
  for (let pageNumber = 1; ; pageNumber += 1) {
    await page.locator("#raw-position").filter({ hasText: `page ${pageNumber}:` }).waitFor();
    const rows = await tableText("#raw-table");
    assert(rows.length >= 1 && rows.length <= 7, `page ${pageNumber} has ${rows.length} events`);
    seen.push(...rows.map((row) => row[0]));
    if (pageNumber === 2) await page.screenshot({ path: join(screenshots, "console-raw-events.png"), fullPage: true });
    const next = page.getByRole("button", { name: "Next page" });
    if (await next.isDisabled()) break;
    await next.click();
  }
  const expectedIds = expectedPerHour[1].map((event) => event.event_id).sort();
  assert.equal(seen.length, expectedIds.length, "every event once: no page repeats one");
  assert.deepEqual([...seen].sort(), expectedIds);
  assert.match(await page.locator("#raw-position").textContent(), new RegExp(`of ${expectedIds.length} \\(last page\\)`));

  // The event a day in the future: rejected in the hour it was sent (open, so its rollup is provisional).
  await page.goto(`${origin}/console/?from=${utcInput(new Date(thisHour))}&to=${utcInput(new Date(thisHour + 2 * HOUR_MS))}`);
  const sendingHour = await waitFor("the hour of sending in the ledger", async () => {
    await show();
    const rows = await tableText("#ledger-table");
    if (rows.length !== 1) throw new Error(`ledger ${JSON.stringify(rows)}`);
    return rows[0];
  });
  assert.deepEqual(
    [...sendingHour.slice(1, 8), sendingHour[9]],
    ["1", "0", "1", "occurred at in future: 1", "0", "0", "0", "balanced"],
    "the future event: received and rejected by its reason in the hour of sending",
  );

  // Empty: a range with no events.
  await page.goto(`${origin}/console/?from=${utcInput(new Date(thisHour - 30 * HOUR_MS))}&to=${utcInput(new Date(thisHour - 20 * HOUR_MS))}`);
  await page.locator("#status").filter({ hasText: "Showing" }).waitFor();
  assert(await page.locator("#metrics-empty").isVisible(), "the empty state is shown");
  assert(await page.locator("#hours-empty").isVisible());
  assert.equal(await page.locator("#ledger-summary").textContent(), "No hour in this range received events.");
  assert(await page.locator("#plan-empty").isVisible(), "an empty range: the plan panel's empty state");

  await checkPlanViolations(page, show, tableText, ingestKey);
  assert.deepEqual(pageErrors, [], "no script errors and no blocked resources");

  // The plan panel's own call failing (the connection refused to it alone) shows the page's unavailable state.
  await page.route("**/hourglass.v1.QueryService/GetPlanViolations", (route) => route.abort("connectionrefused"));
  await page.getByRole("button", { name: "Show", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "unavailable" }).waitFor();
  assert.equal(await page.getByRole("alert").getAttribute("data-kind"), "unavailable");
  assert.doesNotMatch(await page.locator("#status").textContent(), /Showing/, "a failed panel is not reported as shown");
  await page.unroute("**/hourglass.v1.QueryService/GetPlanViolations");

  // A malformed key, a well-formed key the server does not know (the query key with its secret altered),
  // then a key of the wrong scope: the error state, and back to signing in.
  const alteredKey = queryKey.slice(0, -6) + (queryKey.endsWith("aaaaaa") ? "bbbbbb" : "aaaaaa");
  for (const [name, wrongKey, kind, text] of [
    ["malformed-key", "hgk_this_key_does_not_exist", "unauthenticated", "This key was not accepted"],
    ["unknown-key", alteredKey, "unauthenticated", "This key was not accepted"],
    ["ingest-key", ingestKey, "permission", "needs the query scope"],
  ]) {
    const fresh = await browser.newContext();
    const wrong = await fresh.newPage();
    await wrong.goto(`${origin}/console/`);
    await wrong.getByLabel("Query API key").fill(wrongKey);
    await wrong.getByRole("button", { name: "Sign in" }).click();
    const alert = wrong.getByRole("alert");
    await alert.filter({ hasText: text }).waitFor();
    assert.equal(await alert.getAttribute("data-kind"), kind);
    assert(await wrong.getByLabel("Query API key").isVisible(), "back to signing in");
    assert.equal(await wrong.evaluate(() => sessionStorage.length), 0, "a refused key is not kept");
    await wrong.screenshot({ path: join(screenshots, `console-${name}.png`) });
    await fresh.close();
  }

  // The server going away while the page is open: the unavailable state.
  await page.goto(`${origin}/console/?${rangeQuery}`);
  await page.locator("#status").filter({ hasText: "Showing" }).waitFor();
  standalone.kill("SIGTERM");
  await waitFor("standalone to exit", async () => standaloneExited, 30_000);
  await page.getByRole("button", { name: "Show", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "unavailable" }).waitFor();
  assert.equal(await page.getByRole("alert").getAttribute("data-kind"), "unavailable");
  await page.screenshot({ path: join(screenshots, "console-unavailable.png") });
  log(`passed: ${events.length} events in 3 hours, ${seen.length} raw events paged; screenshots in ${screenshots}`);
} catch (error) {
  failed = true;
  console.error("console test: FAILED:", error);
  console.error("standalone's output:\n" + standaloneLog.join("").split("\n").slice(-40).join("\n"));
} finally {
  await browser?.close();
  if (!standaloneExited) {
    standalone.kill("SIGTERM");
    await waitFor("standalone to exit", async () => standaloneExited, 30_000).catch(() => standalone.kill("SIGKILL"));
  }
  if (existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
