// The admin API: every route, against the state the programmatic API sees.
import test from "ava";
import { request } from "node:http";
import { SeriesRing, SseHub, sseMessage, type SseResponse } from "../../simulator/admin-server.js";
import { admin, derive, dpsDevice, dpsToken, hubConnect, hubToken, keyFor, provision, withEmulator, HUB_1, HUB_2 } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

test.serial("admin: GET / lists the routes; /health and /endpoints answer", async (t) => {
  const index = await admin(em, "GET", "/");
  t.is(index.status, 200);
  t.true(index.json.routes.some((r: string) => r.startsWith("POST /faults")));
  t.deepEqual((await admin(em, "GET", "/health")).json, { ok: true });
  const endpoints = await admin(em, "GET", "/endpoints");
  t.is(endpoints.json.dps.tcpPort, em.endpoints.dps.tcpPort);
  t.is(endpoints.json.idScope, em.idScope);
  t.is(endpoints.json.caPath, em.caPath);
  t.is((await admin(em, "GET", "/nowhere")).status, 404);
  t.is((await admin(em, "PUT", "/faults")).status, 405);
  t.is((await admin(em, "POST", "/faults", "{not json")).status, 400);
});

test.serial("admin: enrollments are added, listed without keys, disabled, and removed", async (t) => {
  t.is((await admin(em, "POST", "/enrollments/individual", { registrationId: "adm-1", primaryKey: keyFor("adm-1") })).status, 201);
  t.is((await admin(em, "POST", "/enrollments/groups", { groupId: "adm-g", primaryKey: keyFor("adm-g") })).status, 201);
  const invalid = await admin(em, "POST", "/enrollments/individual", { registrationId: "adm-2", primaryKey: "???" });
  t.is(invalid.status, 400);
  t.is(invalid.json.error.code, "INVALID_CONFIG");
  const unknownHub = await admin(em, "POST", "/enrollments/individual", { registrationId: "adm-2", primaryKey: keyFor("adm-2"), iotHubHostName: "x.example" });
  t.is(unknownHub.status, 404);
  const list = await admin(em, "GET", "/enrollments");
  t.true(list.json.individual.some((e: { registrationId: string }) => e.registrationId === "adm-1"));
  t.false(JSON.stringify(list.json).includes(keyFor("adm-1")), "keys are not listed");
  t.is((await admin(em, "PATCH", "/enrollments/individual/adm-1", { enabled: false })).status, 200);
  t.is((await provision(em, "adm-1", keyFor("adm-1"))).json.status, "disabled");
  t.is((await admin(em, "PATCH", "/enrollments/individual/adm-1", { enabled: "no" })).status, 400);
  t.is((await admin(em, "PATCH", "/enrollments/groups/adm-g", { enabled: false })).status, 200);
  t.is((await provision(em, "adm-g-1", derive(keyFor("adm-g"), "adm-g-1"))).json.status, "disabled");
  t.is((await admin(em, "PATCH", "/enrollments/groups/adm-g", { enabled: true })).status, 200);
  t.is((await provision(em, "adm-g-1", derive(keyFor("adm-g"), "adm-g-1"))).json.status, "assigned");
  t.is((await admin(em, "DELETE", "/enrollments/individual/adm-1")).status, 204);
  t.is((await admin(em, "DELETE", "/enrollments/individual/adm-1")).status, 404);
  t.is((await admin(em, "DELETE", "/enrollments/groups/adm-g")).status, 204);
  t.is((await admin(em, "PATCH", "/enrollments/groups/adm-g", { enabled: true })).status, 404);
});

test.serial("admin: registrations are listed, read one by one and forgotten", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-reg", primaryKey: keyFor("adm-reg") });
  await provision(em, "adm-reg", keyFor("adm-reg"));
  const all = await admin(em, "GET", "/registrations");
  t.true(all.json.some((r: { registrationId: string }) => r.registrationId === "adm-reg"));
  const one = await admin(em, "GET", "/registrations/adm-reg");
  t.like(one.json, { registrationId: "adm-reg", status: "assigned", enrollment: { kind: "individual", registrationId: "adm-reg" } });
  t.is((await admin(em, "DELETE", "/registrations/adm-reg")).status, 204);
  t.is((await admin(em, "GET", "/registrations/adm-reg")).status, 404);
});

test.serial("admin: devices and hubs are listed and changed", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-dev", primaryKey: keyFor("adm-dev"), iotHubHostName: HUB_2 });
  await provision(em, "adm-dev", keyFor("adm-dev"));
  const devices = await admin(em, "GET", "/devices");
  t.true(devices.json.some((d: { deviceId: string; hubHostName: string; enabled: boolean }) => d.deviceId === "adm-dev" && d.hubHostName === HUB_2 && d.enabled));
  t.is((await admin(em, "PATCH", `/devices/adm-dev?hub=${HUB_2}`, { enabled: false })).status, 200);
  t.is((await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"))).returnCode, 5);
  t.is((await admin(em, "PATCH", "/devices/adm-dev", { enabled: true })).status, 200);
  t.is((await admin(em, "PATCH", `/hubs/${HUB_2}`, { available: false })).status, 200);
  t.like((await admin(em, "GET", "/hubs")).json.find((h: { hostName: string }) => h.hostName === HUB_2), { available: false });
  t.is((await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"))).returnCode, 3);
  t.is((await admin(em, "PATCH", `/hubs/${HUB_2}`, { available: true })).status, 200);
  t.is((await admin(em, "PATCH", "/hubs/nowhere.example", { available: true })).status, 404);
  const ok = await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"));
  t.is(ok.returnCode, 0);
  ok.client.end();
  t.is((await admin(em, "DELETE", `/devices/adm-dev?hub=${HUB_1}`)).status, 404);
  t.is((await admin(em, "DELETE", "/devices/adm-dev")).status, 204);
  t.is((await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"))).returnCode, 5);
});

test.serial("admin: faults are added (one or many), listed with match counts, removed and cleared", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-fault", primaryKey: keyFor("adm-fault") });
  const added = await admin(em, "POST", "/faults", [
    { step: "register", registrationId: "adm-fault", status: 412, times: 1 },
    { step: "poll", registrationId: "adm-fault", status: 415 },
  ]);
  t.is(added.status, 201);
  t.is(added.json.ids.length, 2);
  t.is((await admin(em, "POST", "/faults", { step: "register", status: 299 })).status, 400);
  const device = await dpsDevice(em, "adm-fault", keyFor("adm-fault"));
  t.teardown(() => device.client.end());
  t.is((await device.register()).status, 412);
  const listed = await admin(em, "GET", "/faults");
  t.is(listed.json.find((f: { id: number }) => f.id === added.json.ids[0]).matched, 1);
  t.is((await admin(em, "DELETE", `/faults/${added.json.ids[1]}`)).status, 204);
  t.is((await admin(em, "DELETE", `/faults/${added.json.ids[1]}`)).status, 404);
  const accepted = await device.register();
  t.is((await device.poll(accepted.json.operationId)).status, 200);
  await admin(em, "POST", "/faults", { step: "register", registrationId: "adm-fault", status: 500 });
  t.is((await admin(em, "DELETE", "/faults")).status, 204);
  t.deepEqual((await admin(em, "GET", "/faults")).json, []);
  t.is((await device.register()).status, 202);
});

test.serial("admin: counters per status code and telemetry are read and reset", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-tel", primaryKey: keyFor("adm-tel"), iotHubHostName: HUB_1 });
  await provision(em, "adm-tel", keyFor("adm-tel"));
  const { client } = await hubConnect(em, HUB_1, "adm-tel", keyFor("adm-tel"));
  t.teardown(() => client.end());
  for (let i = 0; i < 3; i++) await client.publish("devices/adm-tel/messages/events/", `m${i}`);
  const counters = await admin(em, "GET", "/counters");
  t.true(counters.json.dps["202"] >= 1 && counters.json.dps["200"] >= 1);
  t.true(counters.json.hub.telemetry >= 3);
  t.true(counters.json.connections >= 1);
  const telemetry = await admin(em, "GET", "/telemetry?deviceId=adm-tel&limit=2");
  t.deepEqual(telemetry.json.map((m: { payload: string }) => m.payload), ["m1", "m2"]);
  t.is((await admin(em, "DELETE", "/telemetry")).status, 204);
  t.deepEqual((await admin(em, "GET", "/telemetry")).json, []);
  t.is((await admin(em, "DELETE", "/counters")).status, 204);
  t.deepEqual((await admin(em, "GET", "/counters")).json.dps, {});
});

// ---- the dashboard --------------------------------------------------------------------------------

interface StreamEvent {
  event: string;
  data: any;
}

/**
 * Reads Server-Sent Events from `url` until `until` says enough (or the stream ends, or `ms`
 * pass); returns the events and the raw text.
 */
function readStream(url: string, until: (events: StreamEvent[]) => boolean, ms = 5000): Promise<{ events: StreamEvent[]; text: string; ended: boolean; status: number }> {
  return new Promise((resolve, reject) => {
    const events: StreamEvent[] = [];
    let text = "";
    let rest = "";
    let status = 0;
    let done = false;
    const finish = (ended: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ events, text, ended, status });
    };
    const timer = setTimeout(() => finish(false), ms);
    const req = request(url, (res) => {
      status = res.statusCode ?? 0;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
        rest += chunk;
        let at: number;
        while ((at = rest.indexOf("\n\n")) >= 0) {
          const block = rest.slice(0, at);
          rest = rest.slice(at + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data !== undefined) events.push({ event, data: JSON.parse(data) });
        }
        if (until(events)) finish(false);
      });
      res.on("end", () => finish(true));
      res.on("error", () => finish(true));
    });
    req.on("error", (error) => (done ? undefined : reject(error)));
    req.end();
  });
}

test.serial("admin: GET /dashboard serves the page, its scripts and uPlot; GET / lists it", async (t) => {
  const base = em.endpoints.admin.url;
  for (const path of ["/dashboard", "/dashboard/"]) {
    const page = await fetch(base + path);
    t.is(page.status, 200);
    t.regex(page.headers.get("content-type") ?? "", /^text\/html/);
    t.regex(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    const html = await page.text();
    t.true(html.includes('src="/dashboard/app.js"') && html.includes('src="/dashboard/uPlot.iife.min.js"'));
  }
  for (const [path, type] of [
    ["/dashboard/app.js", /javascript/],
    ["/dashboard/common.js", /javascript/],
    ["/dashboard/style.css", /css/],
    ["/dashboard/uPlot.iife.min.js", /javascript/],
    ["/dashboard/uPlot.min.css", /css/],
    ["/dashboard/fleet.html", /html/],
  ] as const) {
    const res = await fetch(base + path);
    t.is(res.status, 200, path);
    t.regex(res.headers.get("content-type") ?? "", type, path);
    t.true((await res.text()).length > 100, path);
  }
  t.true((await (await fetch(base + "/dashboard/uPlot.iife.min.js")).text()).includes("uPlot"));
  t.is((await fetch(base + "/dashboard/../package.json")).status, 404, "only the listed files");
  t.is((await fetch(base + "/dashboard/%2e%2e%2fpackage.json")).status, 404);
  t.is((await fetch(base + "/dashboard/nothing.js")).status, 404);
  t.is((await fetch(base + "/dashboard", { method: "POST", body: "{}" })).status, 405);
  const index = await admin(em, "GET", "/");
  t.true(index.json.routes.some((r: string) => r.startsWith("GET /dashboard/events")));
});

test.serial("admin: the dashboard stream sends a snapshot, then a tick about every second with the new point", async (t) => {
  em.addIndividualEnrollment({ registrationId: "dash-1", primaryKey: keyFor("dash-1") });
  const { events, text, status } = await readStream(em.endpoints.admin.url + "/dashboard/events", (e) => e.filter((x) => x.event === "tick").length >= 2);
  t.is(status, 200);
  t.true(text.startsWith("retry: 3000\n\nevent: snapshot\n"));
  t.is(events[0].event, "snapshot");
  const snapshot = events[0].data;
  t.is(snapshot.kind, "emulator");
  t.is(snapshot.intervalMs, 1000);
  t.is(snapshot.series.capacity, 900);
  for (const column of Object.values(snapshot.series.series) as unknown[][]) t.is(column.length, snapshot.series.t.length);
  for (const name of ["overview", "totals", "faults", "hubs", "enrollments", "devices", "telemetry"]) t.truthy(snapshot.sections[name], name);
  t.is(snapshot.sections.overview.idScope, em.idScope);
  t.true(snapshot.sections.enrollments.individual.some((e: { registrationId: string }) => e.registrationId === "dash-1"));
  t.deepEqual(snapshot.sections.totals.dps, em.counters().dps);
  const ticks = events.filter((e) => e.event === "tick");
  t.is(ticks.length, 2);
  t.true(ticks[1].data.t > ticks[0].data.t && ticks[1].data.t - ticks[0].data.t < 1.5);
  t.is(typeof ticks[0].data.point.registrations, "number");
  t.is(typeof ticks[0].data.point.connections, "number");
  // Only what changed: the second tick does not repeat an unchanged enrollment list.
  t.false("enrollments" in ticks[1].data.sections);
  const state = await admin(em, "GET", "/dashboard/state");
  t.is(state.status, 200);
  t.is(state.json.kind, "emulator");
});

test.serial("admin: the dashboard counts what devices do, and never carries keys or tokens", async (t) => {
  const id = "dash-secret";
  const key = keyFor(id);
  em.addIndividualEnrollment({ registrationId: id, primaryKey: key, secondaryKey: keyFor("dash-secret-2"), iotHubHostName: HUB_1 });
  em.addGroupEnrollment({ groupId: "dash-group", primaryKey: keyFor("dash-group") });
  const member = derive(keyFor("dash-group"), "dash-member");
  await provision(em, id, key);
  await provision(em, "dash-member", member);
  const { client } = await hubConnect(em, HUB_1, id, key);
  t.teardown(() => client.end());
  const token = hubToken(HUB_1, id, key);
  await client.publish(`devices/${id}/messages/events/`, JSON.stringify({ note: "hello", leaked: token }));
  await client.publish(`devices/${id}/messages/events/`, JSON.stringify({ temperature: 21.5 }));
  const { events, text } = await readStream(em.endpoints.admin.url + "/dashboard/events", (e) => e.some((x) => x.event === "tick"));
  const state = JSON.stringify((await admin(em, "GET", "/dashboard/state")).json);
  const snapshot = events[0].data.sections;
  t.true(snapshot.devices.rows.some((r: { registrationId: string; connected: boolean }) => r.registrationId === id && r.connected));
  t.true(snapshot.telemetry.recent.some((m: { payload: string }) => m.payload.includes("21.5")));
  t.true(snapshot.telemetry.recent.some((m: { payload: string }) => m.payload.startsWith("[hidden")), "a payload holding a token is not shown");
  t.true(snapshot.totals.hubSessions >= 1);
  for (const [name, body] of [["stream", text], ["state", state]]) {
    for (const secret of [key, keyFor("dash-secret-2"), keyFor("dash-group"), member, token, dpsToken(id, key)]) t.false(body.includes(secret), `${name} holds a key or token`);
    t.false(/SharedAccessSignature|[?&]sig=|primaryKey|secondaryKey/.test(body), `${name} holds token or key fields`);
  }
});

test("admin: the dashboard stream ends with an `end` event when the emulator stops", async (t) => {
  const own = await withEmulator();
  let stopped = false;
  const reading = readStream(own.endpoints.admin.url + "/dashboard/events", (e) => {
    if (!stopped && e.length >= 1) {
      stopped = true;
      void own.dispose();
    }
    return false;
  }, 8000);
  const { events, ended } = await reading;
  t.true(ended, "the response ends");
  t.is(events[0].event, "snapshot");
  t.deepEqual(events[events.length - 1], { event: "end", data: { reason: "the emulator stopped" } });
});

/** A response stand-in: `full` makes writes back up, as a client that stopped reading does. */
function fakeResponse() {
  const fake = {
    written: [] as string[],
    full: false,
    ended: false,
    destroyed: false,
    onClose: undefined as (() => void) | undefined,
    get writableNeedDrain() {
      return fake.full;
    },
    get writableLength() {
      return fake.full ? 65_536 : 0;
    },
    write(chunk: string) {
      fake.written.push(chunk);
      return !fake.full;
    },
    end() {
      fake.ended = true;
    },
    destroy() {
      fake.destroyed = true;
      fake.onClose?.();
    },
    once(_event: "close", listener: () => void) {
      fake.onClose = listener;
      return fake;
    },
  };
  return fake;
}

test("dashboard SseHub: a client that falls behind gets no ticks, a snapshot once it drains, and is dropped when it lags too long", (t) => {
  let now = 0;
  const hub = new SseHub({ maxClients: 2, maxLagMs: 10_000, now: () => now });
  const quick = fakeResponse();
  const slow = fakeResponse();
  t.true(hub.add(quick satisfies SseResponse, "S0"));
  t.true(hub.add(slow, "S0"));
  t.false(hub.add(fakeResponse(), "S0"), "at most maxClients");
  t.true(hub.full);
  let snapshots = 0;
  const snapshot = () => (snapshots++, "SNAP");
  hub.send("T1", snapshot);
  slow.full = true;
  for (let i = 2; i <= 6; i++) {
    now += 1000;
    hub.send(`T${i}`, snapshot);
  }
  t.deepEqual(quick.written, ["retry: 3000\n\nS0", "T1", "T2", "T3", "T4", "T5", "T6"]);
  t.deepEqual(slow.written, ["retry: 3000\n\nS0", "T1"], "nothing is queued for a client that does not read");
  slow.full = false;
  now += 1000;
  hub.send("T7", snapshot);
  t.deepEqual(slow.written.slice(2), ["SNAP"], "a snapshot replaces the ticks it missed");
  t.is(snapshots, 1);
  hub.send("T8", snapshot);
  t.is(slow.written[3], "T8");
  slow.full = true;
  for (let i = 0; i < 12; i++) {
    now += 1000;
    hub.send("T", snapshot);
  }
  t.true(slow.destroyed, "dropped after maxLagMs without draining");
  t.is(hub.size, 1);
  t.is(hub.dropped, 1);
  hub.close(sseMessage("end", { reason: "bye" }));
  t.true(quick.ended);
  t.is(quick.written[quick.written.length - 1], 'event: end\ndata: {"reason":"bye"}\n\n');
  t.false(hub.add(fakeResponse(), "S0"), "closed");
});

test("dashboard SeriesRing: keeps the newest `capacity` points, oldest first; a late series reads 0 before it appeared", (t) => {
  const ring = new SeriesRing(3, 2);
  ring.push(1, { a: 1 });
  ring.push(2, { a: 2, b: 20 });
  t.deepEqual(ring.snapshot(), { capacity: 3, t: [1, 2], series: { a: [1, 2], b: [0, 20] } });
  ring.push(3, { b: 30, c: 300 });
  ring.push(4, { a: 4, b: Number.NaN });
  t.deepEqual(ring.snapshot(), { capacity: 3, t: [2, 3, 4], series: { a: [2, 0, 4], b: [20, 30, 0] } }, "at most maxSeries names; NaN reads 0");
  t.is(ring.size, 3);
  t.throws(() => new SeriesRing(0));
});

/** A raw admin request with the headers a browser would add. */
function browserRequest(em: Em, method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, em.endpoints.admin.url);
    const req = request(url, { method, headers: { "content-type": "text/plain", ...headers } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

test.serial("admin: a page of another origin cannot change the emulator (a cross-site POST is refused); the dashboard's own page, curl and reads can", async (t) => {
  const rule = { step: "register", registrationId: "csrf-probe", status: 503, times: 1 };
  const before = (await admin(em, "GET", "/faults")).json.length;
  t.is(await browserRequest(em, "POST", "/faults", { origin: "http://evil.example" }, rule), 403);
  t.is(await browserRequest(em, "POST", "/faults", { "sec-fetch-site": "cross-site", origin: "http://evil.example" }, rule), 403);
  t.is(await browserRequest(em, "DELETE", "/faults", { "sec-fetch-site": "same-site" }), 403);
  t.is((await admin(em, "GET", "/faults")).json.length, before, "no rule was added");
  t.is(await browserRequest(em, "GET", "/faults", { origin: "http://evil.example", "sec-fetch-site": "cross-site" }), 200, "reads stay open (the page is read-only to others)");
  const own = new URL(em.endpoints.admin.url);
  t.is(await browserRequest(em, "POST", "/faults", { origin: `http://${own.host}`, "sec-fetch-site": "same-origin" }, rule), 201);
  const added = (await admin(em, "GET", "/faults")).json as { id: number; rule: { registrationId?: string } }[];
  const probe = added.find((f) => f.rule.registrationId === "csrf-probe");
  t.truthy(probe);
  t.is((await admin(em, "DELETE", `/faults/${probe!.id}`)).status, 204, "curl (no Origin) may change it");
});
