/**
 * The dashboards in a real browser: headless Chromium (Debian's package, driven by playwright-core)
 * loads the emulator's page and a fleet run's page while a small fleet runs against the emulator
 * on loopback. The figures on the pages are compared with the admin API's counters and the fleet's
 * summary once the run has settled; a fault added from the page's form changes what the emulator
 * answers a device; no key or token reaches a page or a stream. Screenshots go to
 * .cache/dashboard/ (and to docs/images/ with UPDATE_SCREENSHOTS=1).
 *
 * Without Chromium (scripts/setup.mjs installs it when run as root) the browser test is skipped,
 * and says so; the fleet dashboard's own tests run anyway.
 */
import test from "ava";
import { createHmac, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDesktopDevice, emulatorTransport } from "../hosts/desktop/device.js";
import { histogram, startFleetDashboard } from "../hosts/desktop/fleet-dashboard.js";
import { runFleet, type FleetControl, type FleetSummary } from "../hosts/desktop/fleet.js";
import { seededRandom } from "../hosts/desktop/platform.js";
import { describeEvent, type RuntimeEvent } from "../modules/runtime.js";
import { startEmulator } from "../simulator/index.js";
import { projectRoot } from "./support/xs.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
const DPS_HOST = "global.azure-devices-provisioning.localhost";
const HUB_1 = "hub-1.azure-devices.localhost";
const HUB_2 = "hub-2.azure-devices.localhost";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const derive = (groupKey: string, id: string) => createHmac("sha256", Buffer.from(groupKey, "base64")).update(id).digest("base64");

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000, detail?: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${detail ? `; what happened:\n${detail()}` : ""}`);
    await sleep(50);
  }
}

/** Raw text of a Server-Sent Events stream for `ms`. */
function streamText(url: string, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const req = request(url, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("error", () => {});
    });
    req.on("error", reject);
    req.end();
    setTimeout(() => {
      req.destroy();
      resolve(text);
    }, ms);
  });
}

// ---- the fleet dashboard without a browser ------------------------------------------------------------

test("fleet dashboard: histogram bins are round and cover every value", (t) => {
  t.deepEqual(histogram([]), { x: [], y: [], width: 0 });
  const h = histogram([0, 120, 950, 1000, 4800], 24);
  t.is(h.width, 200, "4800 / 24 bins");
  t.is(h.y.reduce((a, b) => a + b, 0), 5);
  t.deepEqual(h.x.slice(0, 3), [0, 200, 400]);
  t.is(histogram([1, 2, 3, 70]).width, 5, "a round width: 1, 2, 2.5 or 5 times a power of ten");
  t.is(h.y[0], 2);
  t.is(h.y[h.y.length - 1], 1);
  t.true(h.y.length <= 25);
});

test("fleet dashboard: counts devices by state, time to connected, retries and answers from the fleet's events", async (t) => {
  const dashboard = await startFleetDashboard({ title: "unit", intervalMs: 100 });
  t.teardown(() => dashboard.close());
  t.regex(dashboard.url, /^http:\/\/127\.0\.0\.1:\d+\/dashboard$/);
  const dps = (state: string, extra: Record<string, unknown> = {}) => ({ source: "dps", status: { state, attempt: 0, ...extra } }) as RuntimeEvent;
  const runtime = (state: string, extra: Record<string, unknown> = {}) => ({ source: "runtime", state, ...extra }) as RuntimeEvent;
  dashboard.onProgress({ elapsedMs: 0, booted: 0, connected: 0, everConnected: 0, done: 0, failed: 0, total: 5 });
  dashboard.onEvent(0, "d0", runtime("provisioning"));
  dashboard.onEvent(0, "d0", dps("registering"));
  dashboard.onEvent(0, "d0", dps("assigning", { httpStatus: 202 }));
  dashboard.onEvent(0, "d0", dps("assigned"));
  dashboard.onEvent(0, "d0", runtime("connecting"));
  dashboard.onEvent(0, "d0", runtime("connected"));
  dashboard.onEvent(2, "d2", runtime("provisioning"));
  dashboard.onEvent(2, "d2", dps("retrying", { httpStatus: 429, delayMs: 1000 }));
  dashboard.onEvent(1, "d1", runtime("provisioning"));
  dashboard.onEvent(1, "d1", runtime("failed", { error: { code: "REGISTRATION_FAILED", message: "DPS answered 401" } }));
  dashboard.onEvent(1, "d1", runtime("stopped"));
  dashboard.onEvent(0, "d0", { source: "hub", hub: HUB_1, status: { state: "retrying", attempt: 1, delayMs: 5000 } });
  dashboard.onEvent(0, "d0", runtime("connecting"));
  dashboard.mark("hub down");
  await sleep(250);
  const state = (await (await fetch(dashboard.url + "/state")).json()) as any;
  t.is(state.kind, "fleet");
  const s = state.sections;
  t.deepEqual(s.states, { "waiting to boot": 2, provisioning: 0, retrying: 2, connecting: 0, connected: 0, done: 0, "backing off": 0, failed: 1 });
  t.is(s.timeToConnected.devices, 1);
  t.deepEqual(s.retries, { dps: 1, hub: 1, registers: 1, causes: { "429": 1 } });
  t.deepEqual(s.statusCodes, { "200": 1, "202": 1, "429": 1 });
  t.is(s.problems.length, 1);
  t.is(s.problems[0].registrationId, "d1");
  t.regex(s.problems[0].text, /REGISTRATION_FAILED/);
  t.deepEqual(s.marks.map((m: { name: string }) => m.name), ["hub down"]);
  t.true(state.series.t.length >= 1);
  t.is(state.series.series["state:retrying"].at(-1), 2);
  // The page and its files, from the fleet's own server.
  const page = await fetch(dashboard.url);
  t.is(page.status, 200);
  t.true((await page.text()).includes('src="/dashboard/fleet.js"'));
  t.is((await fetch(dashboard.url.replace(/\/dashboard$/, "/"), { redirect: "manual" })).status, 302);
  t.is((await fetch(dashboard.url + "/uPlot.iife.min.js")).status, 200);
  t.is((await fetch(dashboard.url.replace(/\/dashboard$/, "/nothing"))).status, 404);
  // finish() freezes the series and adds the summary; close() ends the stream and the server.
  dashboard.finish({ total: 5, connected: 1, connectedAtEnd: 0, delivered: 1, failed: [], everBackedOff: 0, timedOut: [], fromCache: 0, elapsedMs: 1234, retries: { count: 1 }, hub: { retries: 1, reRegistrations: 0 }, terminalReasons: {} } as unknown as FleetSummary);
  const after = (await (await fetch(dashboard.url + "/state")).json()) as any;
  t.is(after.sections.summary.connected, 1);
  t.true(after.sections.overview.finished);
  const points = after.series.t.length;
  await sleep(250);
  t.is(((await (await fetch(dashboard.url + "/state")).json()) as any).series.t.length, points, "no points after finish");
  const text = streamText(dashboard.url + "/events", 1000);
  await sleep(200);
  await dashboard.close();
  t.regex(await text, /event: end\ndata: \{"reason":"the fleet run is over"\}/);
  await t.throwsAsync(fetch(dashboard.url));
});

// ---- in Chromium ------------------------------------------------------------------------------------------

const browserTitle = "dashboards in headless Chromium: the figures match the admin API and the fleet's summary, a fault added from the page changes the answers, no key or token is shown";
if (!haveChromium) {
  console.log(`dashboard.test: no Chromium at ${CHROMIUM}: the browser test is skipped (scripts/setup.mjs installs Debian's chromium when run as root; CHROMIUM_PATH names another)`);
}
(haveChromium ? test.serial : test.skip)(haveChromium ? browserTitle : `${browserTitle} [skipped: no Chromium at ${CHROMIUM}]`, async (t) => {
  t.timeout(120_000);
  const { chromium } = await import("playwright-core");
  const stateDir = join(projectRoot, ".cache", "emulator-tests");
  const shots = join(projectRoot, ".cache", "dashboard");
  mkdirSync(shots, { recursive: true });
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  t.teardown(async () => {
    for (const step of cleanup.reverse()) await Promise.resolve(step()).catch(() => {});
  });

  const emulator = await startEmulator({
    stateDir,
    seed: 11,
    config: { idScope: "0ne0000DA5H", hubs: [{ hostName: HUB_1 }, { hostName: HUB_2, allocationWeight: 2 }], retryAfterSeconds: 1 },
  });
  cleanup.push(() => emulator.stop());
  const groupKey = randomBytes(32).toString("base64");
  const labKey = randomBytes(32).toString("base64");
  emulator.addGroupEnrollment({ groupId: "fleet", primaryKey: groupKey });
  emulator.addIndividualEnrollment({ registrationId: "lab-bench-01", primaryKey: labKey, iotHubHostName: HUB_1 });
  // Some 503s for the retry timeline.
  emulator.addFault({ step: "register", probability: 0.25, status: 503 });
  const fleetDashboard = await startFleetDashboard({ title: "dashboard test", emulatorUrl: emulator.endpoints.admin.url });
  cleanup.push(() => fleetDashboard.close());

  const userDataDir = mkdtempSync(join(tmpdir(), "dps-dashboard-chromium-"));
  cleanup.push(() => rmSync(userDataDir, { recursive: true, force: true }));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  cleanup.push(() => browser.close());
  const pageErrors: string[] = [];
  const open = async (url: string) => {
    const page = await browser.newPage();
    page.on("pageerror", (error) => pageErrors.push(error.message));
    page.on("console", (m) => m.type() === "error" && pageErrors.push(m.text()));
    await page.goto(url);
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    return page;
  };
  const emulatorPage = await open(emulator.endpoints.admin.url + "/dashboard");
  const fleetPage = await open(fleetDashboard.url);
  const ticksOf = async (page: typeof emulatorPage) => Number(await page.evaluate(() => (globalThis as any).document.body.dataset.ticks));
  /** Waits for two more renders, so that the page shows what the servers know now. */
  const fresh = async (page: typeof emulatorPage) => {
    const from = await ticksOf(page);
    await until("the page to render twice more", async () => (await ticksOf(page)) >= from + 2, 10_000);
  };
  const counters = async () => (await (await fetch(emulator.endpoints.admin.url + "/counters")).json()) as ReturnType<typeof emulator.counters>;
  const streamCapture = streamText(emulator.endpoints.admin.url + "/dashboard/events", 6000);

  const count = 32;
  const ids = Array.from({ length: count }, (_, i) => `sensor-${String(i + 1).padStart(3, "0")}`);
  const transport = emulatorTransport(emulator.endpoints, emulator.caPem, DPS_HOST, true);
  const retryPolicy = { backoff: { initialMs: 500 } };
  const lateEvents: RuntimeEvent[] = [];
  let holdError: unknown;
  const summary = await runFleet({
    count,
    transport,
    random: seededRandom(7),
    staggerMs: 4000,
    messages: 2,
    timeoutMs: 90_000,
    configFor: (i) => ({ idScope: emulator.idScope, registrationId: ids[i], groupKey, globalEndpoint: DPS_HOST, retryPolicy }),
    onEvent: fleetDashboard.onEvent,
    onProgress: fleetDashboard.onProgress,
    // An error inside is kept for after the run: runFleet stops its devices only when hold returns.
    hold: (fleet) => during(fleet).catch((error) => (holdError = error)),
  });
  async function during(fleet: FleetControl): Promise<void> {
    await fleet.settled;
    fleetDashboard.mark("settled");
    // A fault from the page's form: the next device registering gets 429 twice.
    await emulatorPage.selectOption('#fault-form select[name="step"]', "register");
    await emulatorPage.selectOption('#fault-form select[name="status"]', "429");
    await emulatorPage.fill('#fault-form input[name="registrationId"]', "sensor-late");
    await emulatorPage.fill('#fault-form input[name="retryAfter"]', "1");
    await emulatorPage.fill('#fault-form input[name="times"]', "2");
    await emulatorPage.click("#fault-add");
    await emulatorPage.waitForSelector("#fault-status.ok", { timeout: 5000 });
    const faults = (await (await fetch(emulator.endpoints.admin.url + "/faults")).json()) as { id: number; rule: Record<string, unknown> }[];
    const added = faults.find((f) => f.rule.registrationId === "sensor-late");
    t.like(added?.rule, { step: "register", status: 429, retryAfter: 1, times: 2 });
    const late = createDesktopDevice({
      config: { idScope: emulator.idScope, registrationId: "sensor-late", groupKey, globalEndpoint: DPS_HOST, retryPolicy },
      transport,
      listener: (e) => lateEvents.push(e),
    });
    cleanup.push(() => late.stop());
    late.start();
    // Bounded, with what the device went through in the message: under a full parallel run this
    // wait has taken over 20 s twice (its two 429s are retried after 1 s each; not explained yet).
    await until("the late device to connect", () => lateEvents.some((e) => e.source === "runtime" && e.state === "connected"), 45_000, () => lateEvents.map((e) => describeEvent(e)).join("\n"));
    late.send({ device: "sensor-late", temperature: 19.5 });
    await until("its telemetry", () => lateEvents.some((e) => e.source === "telemetry" && e.state === "sent"));
    // A hub away for a moment, for the retry timeline.
    fleetDashboard.mark("hub-2 away");
    emulator.setHubAvailable(HUB_2, false);
    await sleep(1500);
    emulator.setHubAvailable(HUB_2, true);
    await until("the fleet to be back", () => fleet.connectedNow() === count, 30_000);
    fleetDashboard.mark("all back");
    await Promise.all([fresh(emulatorPage), fresh(fleetPage)]);
    await emulatorPage.screenshot({ path: join(shots, "dashboard.png"), fullPage: true });
    await fleetPage.screenshot({ path: join(shots, "fleet-dashboard.png"), fullPage: true });
    // Remove the rule from the page too.
    await emulatorPage.click(`[data-fault-id="${added!.id}"] button[data-remove]`);
    await until("the rule to go", async () => !((await (await fetch(emulator.endpoints.admin.url + "/faults")).json()) as { id: number }[]).some((f) => f.id === added!.id), 5000);
    late.stop();
  }
  if (holdError) throw holdError;
  fleetDashboard.finish(summary);
  t.is(summary.connected, count);
  t.deepEqual(summary.timedOut, []);

  // The fault added from the page reached the device: two 429s (with retry-after 1), then assigned.
  const lateAnswers = lateEvents.filter((e): e is Extract<RuntimeEvent, { source: "dps" }> => e.source === "dps" && e.status.httpStatus === 429);
  t.is(lateAnswers.length, 2, "two 429 answers");
  t.true(lateAnswers.every((e) => e.status.state === "retrying"));

  // Once everything has settled, the pages show the admin API's figures.
  await until("every connection to close", async () => (await counters()).connections === 0, 10_000);
  await fresh(emulatorPage);
  const api = await counters();
  t.true((api.dps["429"] ?? 0) >= 2 && (api.faults.register ?? 0) >= 2, "the counters show the injected 429s");
  const tiles = await emulatorPage.$$eval("[data-stat]", (nodes) => Object.fromEntries(nodes.map((n) => [(n as any).dataset.stat, Number((n.querySelector(".v") as any).dataset.value)])));
  t.deepEqual(tiles, {
    registrations: api.registrations,
    registrationRecords: api.registrationRecords,
    hubSessions: 0,
    connections: api.connections,
    telemetry: api.hub.telemetry,
    throttled: api.throttled,
    faultsInjected: Object.values(api.faults).reduce((a, b) => a + b, 0),
    badPackets: api.badPackets,
  });
  const codes = await emulatorPage.$$eval("tr[data-code]", (rows) => Object.fromEntries(rows.map((r) => [(r as any).dataset.code, Number((r as any).dataset.count)])));
  const expected: Record<string, number> = {};
  for (const table of ["dps", "hub", "https", "faults"] as const) for (const [k, v] of Object.entries(api[table])) expected[`${table}:${k}`] = v;
  t.deepEqual(codes, expected, "every status code row matches GET /counters");
  const registrations = (await (await fetch(emulator.endpoints.admin.url + "/registrations")).json()) as unknown[];
  t.is(Number(await emulatorPage.getAttribute("#devices-summary", "data-registrations")), registrations.length);
  t.is(registrations.length, count + 1);
  const hubs = (await (await fetch(emulator.endpoints.admin.url + "/hubs")).json()) as { hostName: string; devices: number }[];
  const pageHubs = await emulatorPage.$$eval("tr[data-hub]", (rows) => rows.map((r) => [(r as any).dataset.hub, Number((r as any).dataset.devices)]));
  t.deepEqual(Object.fromEntries(pageHubs), Object.fromEntries(hubs.map((h) => [h.hostName, h.devices])));
  t.is(await emulatorPage.locator("tr[data-enrollment]").count(), 2);
  t.is(await emulatorPage.locator("tr[data-fault-id]").count(), 1, "the 503 rule is left, the page's rule removed");

  // The fleet's page shows the fleet's own tally (finish() sent the last figures and the summary).
  await fleetPage.waitForSelector("#summary table", { timeout: 5000 });
  const fleetTiles = await fleetPage.$$eval("[data-stat]", (nodes) => Object.fromEntries(nodes.map((n) => [(n as any).dataset.stat, (n.querySelector(".v") as any).dataset.value])));
  t.like(fleetTiles, { total: String(count), everConnected: String(summary.connected), dpsRetries: String(summary.retries.count), hubRetries: String(summary.hub.retries) });
  const fleetCodes = await fleetPage.$$eval("#codes tr[data-code]", (rows) => Object.fromEntries(rows.map((r) => [(r as any).dataset.code, Number((r as any).dataset.count)])));
  t.deepEqual(fleetCodes, summary.statusCodes, "DPS answers met, as the fleet's summary counts them");
  t.regex((await fleetPage.textContent("#summary")) ?? "", new RegExp(`${count} of ${count}`));

  // No key or token on either page or in the stream.
  const secrets = [groupKey, labKey, ...ids.map((id) => derive(groupKey, id)), derive(groupKey, "sensor-late")];
  const texts = {
    "emulator page": await emulatorPage.content(),
    "fleet page": await fleetPage.content(),
    stream: await streamCapture,
    state: await (await fetch(emulator.endpoints.admin.url + "/dashboard/state")).text(),
    "fleet state": await (await fetch(fleetDashboard.url + "/state")).text(),
  };
  t.true(texts.stream.includes("event: snapshot") && texts.stream.includes("event: tick"));
  for (const [name, text] of Object.entries(texts)) {
    t.false(secrets.some((s) => text.includes(s)), `${name} holds a key`);
    t.false(/SharedAccessSignature|[?&]sig=|primaryKey|secondaryKey|groupKey/.test(text), `${name} holds a token or key field`);
  }

  // The streams end when the servers stop, and the pages say so.
  await emulator.stop();
  await fleetDashboard.close();
  await emulatorPage.waitForSelector("#status.stopped", { timeout: 5000 });
  await fleetPage.waitForSelector("#status.stopped", { timeout: 5000 });
  t.deepEqual(pageErrors, [], "no script errors on the pages");
  if (process.env.UPDATE_SCREENSHOTS) {
    mkdirSync(join(projectRoot, "docs", "images"), { recursive: true });
    copyFileSync(join(shots, "dashboard.png"), join(projectRoot, "docs", "images", "dashboard.png"));
    copyFileSync(join(shots, "fleet-dashboard.png"), join(projectRoot, "docs", "images", "fleet-dashboard.png"));
  }
});
