// A fleet run's dashboard (hosts/desktop/fleet-dashboard.ts serves it): devices by state over
// time, the time-to-connected distribution, the retry timeline and the DPS answers met.
import { $, BarChart, LiveSeries, TimeChart, colourFor, connectStream, fmt, fmtMs, fmtTime, h, setStat, table } from "./common.js";

const live = new LiveSeries();
const sections = {};
let stateNames = [];

const STATE_COLOURS = {
  "waiting to boot": "#d0d5dd",
  provisioning: "#7aa7f5",
  retrying: "#f0a43a",
  connecting: "#9fd3df",
  connected: "#1f9d55",
  done: "#0f5e34",
  "backing off": "#9b6bdf",
  failed: "#d33a2c",
};

const HUB_RETRY_COLOUR = "#7b3fe4";
const times = () => live.t;
const marks = () => sections.marks ?? [];
const charts = [
  new TimeChart($("#chart-states"), {
    times,
    marks,
    stacked: true,
    height: 240,
    lines: () => stateNames.map((name) => ({ key: `state:${name}`, label: name, colour: STATE_COLOURS[name] ?? colourFor(name), values: live.column(`state:${name}`) })),
  }),
  new TimeChart($("#chart-retries"), {
    times,
    marks,
    height: 240,
    lines: () => [
      ...live.keys("retry:").map((key, i) => ({ key, label: `DPS ${key.slice(6)}`, colour: colourFor(key, i), values: live.column(key) })),
      { key: "hubRetries", label: "hub reconnects", colour: HUB_RETRY_COLOUR, values: live.column("hubRetries") },
    ],
  }),
  new TimeChart($("#chart-dps"), {
    times,
    marks,
    height: 240,
    lines: () => [
      { key: "registers", label: "register requests", colour: "#5b6b7f", values: live.column("registers") },
      ...live.keys("dps:").map((key, i) => ({ key, label: key.slice(4), colour: colourFor(key, i), values: live.column(key) })),
    ],
  }),
];
const ttcChart = new BarChart($("#chart-ttc"), {
  height: 240,
  xLabel: "time to connected",
  colour: "#1f9d55",
  emptyText: "no device has connected yet",
  bins: () => {
    const hist = sections.timeToConnected?.histogram;
    if (!hist || hist.x.length === 0) return undefined;
    return { x: hist.x, y: hist.y, width: hist.width, label: (v) => `${fmtMs(v)} – ${fmtMs(v + hist.width)}` };
  },
});

function codesTable(counts, key, colour = colourFor) {
  const rows = Object.entries(counts).sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
  if (rows.length === 0) return h("div", { class: "empty" }, "none yet");
  return table(
    [
      [key, ([k]) => h("span", {}, h("span", { class: "swatch", style: `background:${colour(k)}` }), k)],
      ["count", ([, v]) => fmt(v), "num"],
    ],
    rows,
    ([k, v]) => ({ "data-code": k, "data-count": v }),
  );
}

const RENDER = {
  overview: (o) => {
    $("#title").textContent = `Fleet run: ${o.title}`;
    document.title = `${o.title} — fleet dashboard`;
    $("#meta").replaceChildren(h("span", {}, "started ", h("b", {}, fmtTime(o.startedAt))), ...(o.finished ? [h("span", {}, h("b", {}, "the run is over"))] : []));
    const links = [h("a", { href: "/dashboard/state" }, "snapshot JSON")];
    if (o.emulatorUrl) links.unshift(h("a", { href: `${o.emulatorUrl}/dashboard` }, "emulator dashboard"));
    $("#links").replaceChildren(...links);
  },
  progress: (p) => {
    setStat("total", p.total);
    setStat("booted", p.booted);
    setStat("connected", p.connected);
    setStat("everConnected", p.everConnected);
    setStat("done", p.done);
    setStat("failed", p.failed);
    document.querySelector('[data-stat="failed"]').classList.toggle("bad", p.failed > 0);
  },
  retries: (r) => {
    setStat("dpsRetries", r.dps);
    setStat("hubRetries", r.hub);
    $("#causes").replaceChildren(
      codesTable(
        { ...Object.fromEntries(Object.entries(r.causes).map(([k, v]) => [`DPS ${k}`, v])), ...(r.hub ? { "hub reconnects": r.hub } : {}) },
        "cause",
        (k) => (k === "hub reconnects" ? HUB_RETRY_COLOUR : colourFor(`retry:${k.slice(4)}`)),
      ),
    );
  },
  timeToConnected: (t) => {
    const p = t.percentiles;
    setStat("ttcMedian", p?.median ?? null, p ? fmtMs(p.median) : "–");
    setStat("ttcP99", p?.p99 ?? null, p ? fmtMs(p.p99) : "–");
    $("#ttc-sub").textContent = p
      ? `${fmt(t.devices)} devices: min ${fmtMs(p.min)}, median ${fmtMs(p.median)}, p99 ${fmtMs(p.p99)}, max ${fmtMs(p.max)}`
      : "from boot to the first hub connection";
  },
  statusCodes: (c) => $("#codes").replaceChildren(codesTable(c, "answer")),
  problems: (list) => {
    if (list.length === 0) {
      $("#problems").replaceChildren(h("div", { class: "empty" }, "None so far."));
      return;
    }
    $("#problems").replaceChildren(
      table(
        [
          ["at", (p) => fmtTime(p.t)],
          ["device", (p) => p.registrationId, "id"],
          ["what happened", (p) => p.text],
        ],
        list,
      ),
    );
  },
  summary: (s) => {
    if (!s) {
      $("#summary").replaceChildren(h("div", { class: "empty" }, "The run is still going."));
      return;
    }
    $("#summary-sub").textContent = `after ${(s.elapsedMs / 1000).toFixed(1)} s`;
    const p = s.timeToConnectedMs;
    const rows = [
      ["connected at least once", `${fmt(s.connected)} of ${fmt(s.total)}`],
      ["connected at the end", fmt(s.connectedAtEnd)],
      ["delivered all telemetry", fmt(s.delivered)],
      ["failed or backing off at the end", fmt(s.failed)],
      ["backed off at some point", fmt(s.everBackedOff)],
      ["timed out", fmt(s.timedOut)],
      ["warm starts (cached assignment)", fmt(s.fromCache)],
      ["time to connected", p ? `min ${fmtMs(p.min)}, median ${fmtMs(p.median)}, p99 ${fmtMs(p.p99)}, max ${fmtMs(p.max)}` : "–"],
      ["DPS retries / hub reconnects", `${fmt(s.dpsRetries)} / ${fmt(s.hubRetries)}`],
      ["re-registrations after connecting", fmt(s.reRegistrations)],
      ...Object.entries(s.terminalReasons).map(([reason, n]) => [`${fmt(n)} ended with`, reason]),
    ];
    $("#summary").replaceChildren(table([["", (r) => r[0]], ["", (r) => r[1]]], rows));
  },
};

function render(changed) {
  for (const [name, value] of Object.entries(changed)) {
    sections[name] = value;
    RENDER[name]?.(value);
  }
  for (const chart of charts) chart.update();
  ttcChart.update();
  document.body.dataset.ticks = String(Number(document.body.dataset.ticks) + 1);
}

connectStream("/dashboard/events", {
  pill: $("#status"),
  onSnapshot: (s) => {
    stateNames = s.states;
    live.applySnapshot(s.series);
    render(s.sections);
  },
  onTick: (m) => {
    if (m.point) live.append(m.t, m.point);
    render(m.sections);
  },
  onEnd: (why) => {
    $("#meta").append(h("span", {}, why.reason));
  },
});
