// What both dashboards share: the stream (a snapshot, then ticks), the series kept in the page
// (the same fixed length as the server's), charts over uPlot (the global `uPlot`, loaded by a
// plain <script>), and small DOM helpers that only ever set text (no HTML from the data).

/** An element with attributes and children (strings become text nodes). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else if (k in node) node[k] = v;
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const numberFormat = new Intl.NumberFormat("en-US");
export function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return numberFormat.format(n);
}
export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  return `${s >= 100 ? fmt(Math.round(s)) : Number(s.toFixed(s >= 10 ? 1 : 2))} s`;
}
export function fmtTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

/** A table: `columns` are [label, (row) => cell, className?]; a cell may be a Node or text. */
export function table(columns, rows, rowAttrs = () => ({})) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([label, , cls]) => h("th", { class: cls }, label)))),
    h("tbody", {}, rows.map((row) => h("tr", rowAttrs(row), columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))))),
  );
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

/** Sets a tile's figure: the element with data-stat="name" holds a .v span. */
export function setStat(name, value, text) {
  const tile = document.querySelector(`[data-stat="${name}"]`);
  if (!tile) return;
  const v = tile.querySelector(".v");
  v.textContent = text ?? fmt(value);
  v.dataset.value = String(value ?? "");
}

// ---- colours ---------------------------------------------------------------------------------------

const PALETTE = ["#2463eb", "#1f9d55", "#d33a2c", "#c27c0e", "#7b3fe4", "#0e9aa7", "#b5487a", "#5b6b7f", "#8a6d1d", "#3a7d44", "#e0672b", "#4a4fb0"];
const STATUS_COLOURS = {
  200: "#1f9d55",
  202: "#2463eb",
  400: "#b58900",
  401: "#e0672b",
  403: "#c0392b",
  404: "#8a6d1d",
  409: "#b5487a",
  412: "#7d5ba6",
  415: "#5b6b7f",
  429: "#d33a2c",
  500: "#7b3fe4",
  503: "#4a4fb0",
};

export function colourFor(key, index = 0) {
  const code = /(\d{3})$/.exec(key);
  if (code && STATUS_COLOURS[code[1]]) return STATUS_COLOURS[code[1]];
  let hash = index;
  for (const ch of key) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

// ---- the stream ------------------------------------------------------------------------------------

/**
 * Opens the stream. `snapshot` replaces everything, `tick` adds a point and the changed sections,
 * `end` means the server has stopped (the page then stays as it was). The pill shows the state.
 */
export function connectStream(url, { onSnapshot, onTick, onEnd, pill }) {
  const source = new EventSource(url);
  const show = (text, cls) => {
    if (!pill) return;
    pill.textContent = text;
    pill.className = `pill ${cls}`;
  };
  show("connecting…", "reconnecting");
  source.addEventListener("snapshot", (e) => {
    show("live", "live");
    onSnapshot(JSON.parse(e.data));
  });
  source.addEventListener("tick", (e) => {
    show("live", "live");
    onTick(JSON.parse(e.data));
  });
  source.addEventListener("end", (e) => {
    source.close();
    const why = JSON.parse(e.data);
    show("stopped", "stopped");
    onEnd?.(why);
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) show("disconnected", "stopped");
    else show("reconnecting…", "reconnecting");
  });
  return source;
}

/** The series as the page keeps them: the server's snapshot, then one point per tick, at most `capacity`. */
export class LiveSeries {
  constructor() {
    this.capacity = 900;
    this.t = [];
    this.series = {};
  }

  applySnapshot(s) {
    this.capacity = s.capacity;
    this.t = s.t.slice();
    this.series = {};
    for (const [k, v] of Object.entries(s.series)) this.series[k] = v.slice();
  }

  /** As the server's ring: a series absent from a point reads 0 there, a new one 0 before it. */
  append(t, point) {
    const n = this.t.length;
    this.t.push(t);
    for (const [k, column] of Object.entries(this.series)) column.push(k in point ? point[k] : 0);
    for (const [k, v] of Object.entries(point)) {
      if (!(k in this.series)) {
        const column = new Array(n).fill(0);
        column.push(v);
        this.series[k] = column;
      }
    }
    if (this.t.length > this.capacity) {
      const cut = this.t.length - this.capacity;
      this.t.splice(0, cut);
      for (const column of Object.values(this.series)) column.splice(0, cut);
    }
  }

  keys(prefix) {
    return Object.keys(this.series).filter((k) => k.startsWith(prefix)).sort();
  }

  column(key) {
    return this.series[key] ?? new Array(this.t.length).fill(0);
  }

  /** The latest value of a series, or null. */
  last(key) {
    const column = this.series[key];
    return column && column.length ? column[column.length - 1] : null;
  }
}

// ---- charts ----------------------------------------------------------------------------------------

/** Axis steps for counts: whole numbers only. */
const INTEGER_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];

/** Vertical dashed lines at named moments (a fleet's timeline marks). */
function marksPlugin(getMarks) {
  return {
    hooks: {
      draw: [
        (u) => {
          const marks = getMarks();
          if (!marks.length) return;
          const { ctx } = u;
          const { top, height, left, width } = u.bbox;
          ctx.save();
          ctx.strokeStyle = "#98a2b3";
          ctx.fillStyle = "#475467";
          ctx.setLineDash([4, 4]);
          ctx.lineWidth = devicePixelRatio;
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          for (const m of marks) {
            const x = Math.round(u.valToPos(m.t, "x", true));
            if (x < left || x > left + width) continue;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            // Alternate rows, so that two marks close together stay readable.
            ctx.fillText(m.name, x + 4 * devicePixelRatio, top + (12 + 13 * (marks.indexOf(m) % 2)) * devicePixelRatio);
          }
          ctx.restore();
        },
      ],
    },
  };
}

/**
 * A time chart whose lines can change (a status code seen for the first time): `lines()` returns
 * [{ key, label, colour, values }]; `update()` redraws, rebuilding the chart when the set changed.
 * With `stacked`, the areas are drawn on top of each other (the legend shows each line's own value).
 */
export class TimeChart {
  constructor(container, { lines, times, height = 220, stacked = false, marks = () => [], yLabel = "", emptyText = "nothing yet" }) {
    this.container = container;
    this.lines = lines;
    this.times = times;
    this.height = height;
    this.stacked = stacked;
    this.marks = marks;
    this.yLabel = yLabel;
    this.emptyText = emptyText;
    this.signature = "";
    this.plot = undefined;
    new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: this.height })).observe(container);
  }

  width() {
    return Math.max(300, this.container.clientWidth);
  }

  update() {
    const lines = this.lines();
    const t = this.times();
    const signature = lines.map((l) => `${l.key}:${l.label}:${l.colour}`).join("|");
    let data;
    let raw;
    if (this.stacked) {
      // Cumulative from the bottom line up; drawn top first so each area covers the ones above it.
      raw = lines.map((l) => l.values);
      const sums = [];
      let running = new Array(t.length).fill(0);
      for (const values of raw) {
        running = running.map((s, i) => s + (values[i] ?? 0));
        sums.push(running);
      }
      data = [t, ...sums.slice().reverse()];
      raw = raw.slice().reverse();
    } else {
      data = [t, ...lines.map((l) => l.values)];
    }
    if (signature !== this.signature || !this.plot) {
      this.signature = signature;
      this.plot?.destroy();
      this.container.replaceChildren();
      if (lines.length === 0) {
        this.plot = undefined;
        this.container.append(h("div", { class: "empty" }, this.emptyText));
        return;
      }
      const ordered = this.stacked ? lines.slice().reverse() : lines;
      // The legend shows the value under the cursor, or the latest one when the cursor is away.
      const lastOf = (column) => (column && column.length ? column[column.length - 1] : null);
      const series = [
        { label: "time", value: (u, v, sidx, didx) => { const t = didx == null ? lastOf(u.data[0]) : v; return t == null ? "–" : fmtTime(t); } },
        ...ordered.map((l) => ({
          label: l.label,
          stroke: l.colour,
          width: 1.75,
          fill: this.stacked ? l.colour + "d0" : undefined,
          points: { show: false },
          value: this.stacked
            ? (u, v, sidx, didx) => {
                const column = this.raw?.[sidx - 1];
                return fmt(didx == null ? lastOf(column) : column?.[didx]);
              }
            : (u, v, sidx, didx) => fmt(didx == null ? lastOf(u.data[sidx]) : v),
        })),
      ];
      this.plot = new uPlot(
        {
          width: this.width(),
          height: this.height,
          series,
          scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
          axes: [
            { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe2e7" } },
            { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe2e7" }, size: 48, incrs: INTEGER_STEPS, label: this.yLabel || undefined, labelSize: this.yLabel ? 18 : undefined },
          ],
          legend: { live: true },
          cursor: { drag: { x: false, y: false } },
          plugins: [marksPlugin(this.marks)],
        },
        data,
        this.container,
      );
      if (this.stacked) {
        // Drawn top first, listed bottom first: the legend in the lines' own order.
        const rows = [...this.plot.root.querySelectorAll(".u-legend .u-series")];
        const body = rows[0]?.parentElement;
        if (body) body.append(rows[0], ...rows.slice(1).reverse());
      }
    } else {
      this.plot.setData(data);
    }
    this.raw = raw;
  }
}

/** A bar chart over numeric bins (the time-to-connected histogram): `bins()` returns { x, y, width, label }. */
export class BarChart {
  constructor(container, { bins, height = 220, colour = "#2463eb", xLabel = "", emptyText = "nothing yet" }) {
    this.container = container;
    this.bins = bins;
    this.height = height;
    this.colour = colour;
    this.xLabel = xLabel;
    this.emptyText = emptyText;
    this.plot = undefined;
    new ResizeObserver(() => this.plot?.setSize({ width: Math.max(300, container.clientWidth), height: this.height })).observe(container);
  }

  update() {
    const b = this.bins();
    if (!b || b.x.length === 0) {
      this.plot?.destroy();
      this.plot = undefined;
      this.container.replaceChildren(h("div", { class: "empty" }, this.emptyText));
      return;
    }
    const data = [b.x, b.y];
    if (!this.plot) {
      this.container.replaceChildren();
      this.plot = new uPlot(
        {
          width: Math.max(300, this.container.clientWidth),
          height: this.height,
          series: [
            { label: this.xLabel, value: (u, v) => (v == null ? "point at a bar" : this.bins()?.label?.(v) ?? fmt(v)) },
            {
              label: "devices",
              stroke: this.colour,
              fill: this.colour + "b0",
              width: 1,
              paths: uPlot.paths.bars({ size: [0.92, 80], align: 1 }),
              points: { show: false },
              value: (u, v, sidx, didx) => (didx == null ? `${fmt(u.data[1].reduce((a, b) => a + (b ?? 0), 0))} in all` : fmt(v)),
            },
          ],
          // The last bar starts at the last x: the range ends one bin later, so that it shows whole.
          scales: { x: { time: false, range: (u, min, max) => [0, max + (this.bins()?.width ?? 0)] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
          axes: [
            { stroke: "#667085", grid: { show: false }, ticks: { stroke: "#dfe2e7" }, space: 70, values: (u, vals) => vals.map((v) => fmtMs(v)) },
            { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe2e7" }, size: 40, incrs: INTEGER_STEPS },
          ],
          legend: { live: true },
          cursor: { drag: { x: false, y: false } },
        },
        data,
        this.container,
      );
    } else {
      this.plot.setData(data);
    }
  }
}
