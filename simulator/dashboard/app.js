// The emulator's dashboard: renders the stream's sections and series, and adds or removes fault
// rules through the admin API (POST /faults, DELETE /faults/{id}).
import { $, LiveSeries, TimeChart, badge, colourFor, connectStream, fmt, fmtTime, h, setStat, table } from "./common.js";

const live = new LiveSeries();
const sections = {};

const codeLabel = (key) => key.slice(key.indexOf(":") + 1);
const linesOf = (prefix, filter = () => true) =>
  live
    .keys(prefix)
    .filter(filter)
    .map((key, i) => ({ key, label: codeLabel(key), colour: colourFor(key, i), values: live.column(key) }));

const times = () => live.t;
const charts = [
  new TimeChart($("#chart-rate"), {
    times,
    lines: () => [
      { key: "registrations", label: "registrations assigned", colour: "#1f9d55", values: live.column("registrations") },
      { key: "hub:telemetry", label: "telemetry messages", colour: "#2463eb", values: live.column("hub:telemetry") },
    ],
  }),
  new TimeChart($("#chart-dps"), {
    times,
    // Registration answers by HTTP-like status; CONNACK codes and bad packets are in the totals.
    lines: () => linesOf("dps:", (k) => /^dps:\d{3}$/.test(k)),
    emptyText: "no DPS answers yet",
  }),
  new TimeChart($("#chart-faults"), {
    times,
    lines: () => [
      { key: "throttled", label: "throttled", colour: "#d33a2c", values: live.column("throttled") },
      ...linesOf("faults:").map((l) => ({ ...l, label: `fault at ${l.label}` })),
    ],
  }),
  new TimeChart($("#chart-connections"), {
    times,
    lines: () => [
      { key: "connections", label: "MQTT connections (DPS and hubs)", colour: "#7b3fe4", values: live.column("connections") },
      { key: "hubSessions", label: "hub sessions", colour: "#1f9d55", values: live.column("hubSessions") },
    ],
  }),
];

// ---- sections --------------------------------------------------------------------------------------

function renderOverview(o) {
  const e = o.endpoints;
  $("#meta").replaceChildren(
    h("span", { title: "ID scope" }, "scope ", h("b", {}, o.idScope)),
    h("span", { title: `DPS: MQTT over TLS on ${e.dps.tlsPort}, plain TCP on ${e.dps.tcpPort}` }, "DPS ", h("b", {}, `${e.dps.tlsPort}/${e.dps.tcpPort}`)),
    h("span", { title: `hubs: MQTT over TLS on ${e.hub.tlsPort}, plain TCP on ${e.hub.tcpPort}` }, "hubs ", h("b", {}, `${e.hub.tlsPort}/${e.hub.tcpPort}`)),
    h("span", { title: "registration status lookup (HTTPS)" }, "lookup ", h("b", {}, String(e.https))),
    h("span", {}, "seed ", h("b", {}, String(o.seed))),
    h("span", {}, "since ", h("b", {}, fmtTime(o.startedAt))),
  );
}

function codesTable(counts, prefix) {
  const rows = Object.entries(counts).sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
  if (rows.length === 0) return h("div", { class: "empty" }, "none yet");
  return table(
    [
      ["code", ([k]) => h("span", {}, h("span", { class: "swatch", style: `background:${colourFor(k)}` }), k)],
      ["count", ([, v]) => fmt(v), "num"],
    ],
    rows,
    ([k, v]) => ({ "data-code": `${prefix}:${k}`, "data-count": v }),
  );
}

function renderTotals(t) {
  const faults = Object.values(t.faults).reduce((a, b) => a + b, 0);
  setStat("registrations", t.registrations);
  setStat("registrationRecords", t.registrationRecords);
  setStat("hubSessions", t.hubSessions);
  setStat("connections", t.connections);
  setStat("telemetry", t.hub.telemetry ?? 0);
  setStat("throttled", t.throttled);
  setStat("faultsInjected", faults);
  setStat("badPackets", t.badPackets);
  document.querySelector('[data-stat="throttled"]').classList.toggle("warn", t.throttled > 0);
  document.querySelector('[data-stat="faultsInjected"]').classList.toggle("warn", faults > 0);
  $("#codes-dps").replaceChildren(codesTable(t.dps, "dps"));
  $("#codes-hub").replaceChildren(codesTable(t.hub, "hub"));
  $("#codes-https").replaceChildren(codesTable(t.https, "https"));
  $("#codes-faults").replaceChildren(codesTable(t.faults, "faults"));
}

function effectOf(rule) {
  const parts = [];
  if (rule.status !== undefined) parts.push(`status ${rule.status}${rule.errorCode ? ` (${rule.errorCode})` : ""}`);
  if (rule.connack !== undefined) parts.push(`CONNACK ${rule.connack}`);
  if (rule.drop) parts.push("drop");
  if (rule.malformed) parts.push(`malformed ${rule.malformed}`);
  if (rule.delayMs) parts.push(`${rule.delayMs} ms late`);
  if (rule.retryAfter !== undefined) parts.push(`retry-after ${rule.retryAfter}`);
  return parts.join(", ") || "—";
}

async function removeFault(id, button) {
  button.disabled = true;
  const res = await fetch(`/faults/${id}`, { method: "DELETE" });
  status(res.ok ? `fault ${id} removed` : `could not remove fault ${id} (${res.status})`, res.ok ? "ok" : "error");
  await refreshFaults();
}

function renderFaults(faults) {
  $("#faults-sub").textContent = faults.length ? `${faults.length} rule${faults.length === 1 ? "" : "s"}, checked in order` : "";
  if (faults.length === 0) {
    $("#faults").replaceChildren(h("div", { class: "empty" }, "No fault rules: every step behaves."));
    return;
  }
  $("#faults").replaceChildren(
    table(
      [
        ["id", (f) => String(f.id), "num"],
        ["step", (f) => badge(f.rule.step)],
        ["for", (f) => (f.rule.registrationId ? `device ${f.rule.registrationId}` : f.rule.groupId ? `group ${f.rule.groupId}` : "every device"), "id"],
        ["effect", (f) => effectOf(f.rule)],
        ["chance", (f) => (f.rule.probability !== undefined ? `${Math.round(f.rule.probability * 1000) / 10}%` : "always"), "num"],
        ["left", (f) => (f.remaining === null ? "∞" : fmt(f.remaining)), "num"],
        ["matched", (f) => fmt(f.matched), "num"],
        ["", (f) => h("button", { class: "secondary", type: "button", "data-remove": f.id, onclick: (e) => removeFault(f.id, e.currentTarget) }, "Remove")],
      ],
      faults,
      (f) => ({ "data-fault-id": f.id, "data-matched": f.matched }),
    ),
  );
}

function renderHubs(hubs) {
  $("#hubs").replaceChildren(
    table(
      [
        ["host name", (x) => x.hostName, "id"],
        ["state", (x) => (x.available ? badge("available", "ok") : badge("unavailable", "bad"))],
        ["weight", (x) => fmt(x.allocationWeight), "num"],
        ["devices", (x) => fmt(x.devices), "num"],
        ["sessions open", (x) => fmt(x.sessions), "num"],
        ["max message", (x) => `${fmt(x.maxMessageBytes)} B`, "num"],
      ],
      hubs,
      (x) => ({ "data-hub": x.hostName, "data-sessions": x.sessions, "data-devices": x.devices }),
    ),
  );
}

function renderEnrollments(e) {
  $("#enrollments-sub").textContent = `${fmt(e.groupCount)} group${e.groupCount === 1 ? "" : "s"}, ${fmt(e.individualCount)} individual`;
  const rows = [
    ...e.groups.map((g) => ({ kind: "group", id: g.groupId, enabled: g.enabled, hub: g.iotHubHostName, policy: g.reprovisionPolicy, note: g.disabledRegistrations ? `${g.disabledRegistrations} members disabled` : "" })),
    ...e.individual.map((i) => ({ kind: "individual", id: i.registrationId, enabled: i.enabled, hub: i.iotHubHostName, policy: i.reprovisionPolicy, note: i.deviceId && i.deviceId !== i.registrationId ? `device id ${i.deviceId}` : "" })),
  ];
  if (rows.length === 0) {
    $("#enrollments").replaceChildren(h("div", { class: "empty" }, "No enrollments."));
    return;
  }
  $("#enrollments").replaceChildren(
    table(
      [
        ["kind", (r) => r.kind],
        ["id", (r) => r.id, "id"],
        ["state", (r) => (r.enabled ? badge("enabled", "ok") : badge("disabled", "bad"))],
        ["hub", (r) => r.hub ?? "by allocation", "id"],
        ["re-provisioning", (r) => r.policy ?? "default"],
        ["", (r) => r.note],
      ],
      rows,
      (r) => ({ "data-enrollment": `${r.kind}:${r.id}` }),
    ),
  );
}

const STATUS_KIND = { assigned: "ok", assigning: "warn", unassigned: "warn", disabled: "bad", failed: "bad" };

function renderDevices(d) {
  $("#devices-sub").textContent = `${fmt(d.registrations)} registration records, ${fmt(d.hubDevices)} hub devices${d.rows.length < d.registrations ? ` (the ${d.rows.length} updated last shown)` : ""}`;
  const counts = [
    ...Object.entries(d.byStatus).map(([k, v]) => badge(`${k} ${fmt(v)}`, STATUS_KIND[k] ?? "")),
    badge(`connected ${fmt(d.connected)}`, "ok"),
    d.disabledOnHub ? badge(`disabled on the hub ${fmt(d.disabledOnHub)}`, "bad") : null,
  ];
  $("#devices-summary").replaceChildren(...counts.filter(Boolean));
  $("#devices-summary").dataset.registrations = d.registrations;
  $("#devices-summary").dataset.connected = d.connected;
  if (d.rows.length === 0) {
    $("#devices").replaceChildren(h("div", { class: "empty" }, "No device has registered yet."));
    return;
  }
  $("#devices").replaceChildren(
    table(
      [
        ["registration id", (r) => r.registrationId, "id"],
        ["device id", (r) => r.deviceId ?? "–", "id"],
        ["DPS status", (r) => badge(r.status + (r.substatus ? ` · ${r.substatus}` : ""), STATUS_KIND[r.status] ?? "")],
        ["hub", (r) => r.hub ?? "–", "id"],
        ["on the hub", (r) => (r.hubEnabled === null ? "–" : r.hubEnabled ? (r.connected ? badge("connected", "ok") : badge("not connected")) : badge("disabled", "bad"))],
        ["enrollment", (r) => r.enrollment],
        ["last updated", (r) => r.lastUpdated.replace("T", " ").replace(/\.\d+Z$/, "Z")],
      ],
      d.rows,
      (r) => ({ "data-device": r.registrationId, "data-status": r.status }),
    ),
  );
}

function renderTelemetry(t) {
  $("#telemetry-sub").textContent = `${fmt(t.received)} received, ${fmt(t.stored)} stored, newest first`;
  if (t.recent.length === 0) {
    $("#telemetry").replaceChildren(h("div", { class: "empty" }, "No telemetry yet."));
    return;
  }
  $("#telemetry").replaceChildren(
    table(
      [
        ["received", (m) => fmtTime(m.receivedAt)],
        ["device", (m) => m.deviceId, "id"],
        ["hub", (m) => m.hubHostName, "id"],
        ["bytes", (m) => fmt(m.bytes), "num"],
        ["payload", (m) => m.payload, "payload"],
      ],
      t.recent,
    ),
  );
}

const RENDER = { overview: renderOverview, totals: renderTotals, faults: renderFaults, hubs: renderHubs, enrollments: renderEnrollments, devices: renderDevices, telemetry: renderTelemetry };

function render(changed) {
  for (const [name, value] of Object.entries(changed)) {
    sections[name] = value;
    RENDER[name]?.(value);
  }
  for (const chart of charts) chart.update();
  document.body.dataset.ticks = String(Number(document.body.dataset.ticks) + 1);
}

// ---- the fault form ----------------------------------------------------------------------------------

function status(text, kind = "") {
  const el = $("#fault-status");
  el.textContent = text;
  el.className = `form-status ${kind}`;
}

async function refreshFaults() {
  const res = await fetch("/faults");
  if (res.ok) renderFaults((await res.json()).map((f) => ({ ...f, remaining: f.remaining ?? null })));
}

$("#fault-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const data = new FormData(form);
  const rule = { step: data.get("step") };
  for (const name of ["status", "connack", "probability", "times", "delayMs"]) {
    const v = String(data.get(name) ?? "").trim();
    if (v !== "") rule[name] = Number(v);
  }
  for (const name of ["registrationId", "groupId"]) {
    const v = String(data.get(name) ?? "").trim();
    if (v !== "") rule[name] = v;
  }
  const retryAfter = String(data.get("retryAfter") ?? "").trim();
  if (retryAfter !== "") rule.retryAfter = /^\d+$/.test(retryAfter) ? Number(retryAfter) : retryAfter;
  if (data.get("drop")) rule.drop = true;
  const button = $("#fault-add");
  button.disabled = true;
  try {
    const res = await fetch("/faults", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(rule) });
    const body = await res.json().catch(() => ({}));
    if (res.ok) status(`fault ${body.ids.join(", ")} added`, "ok");
    else status(body.error?.message ?? `the admin API answered ${res.status}`, "error");
    await refreshFaults();
  } catch (error) {
    status(`the admin API did not answer: ${error.message}`, "error");
  } finally {
    button.disabled = false;
  }
});

// ---- the stream ----------------------------------------------------------------------------------------

connectStream("/dashboard/events", {
  pill: $("#status"),
  onSnapshot: (s) => {
    live.applySnapshot(s.series);
    render(s.sections);
  },
  onTick: (m) => {
    live.append(m.t, m.point);
    render(m.sections);
  },
  onEnd: (why) => status(`${why.reason}: the page shows its last state`, ""),
});
