/* Small hand-written SVG charts: a line chart over time and a bar inside a table cell. */
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/* points: [{t, key: value}]; lines: [{key, label, cls}]; format: value -> text (with its unit). */
function lineChart(points, lines, format, title) {
  const W = 480, H = 170, L = 66, R = 8, T = 12, B = 24;
  const xs = points.map((p) => p.t);
  const vals = points.flatMap((p) => lines.map((l) => p[l.key])).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1e-9, ...vals), t0 = Math.min(...xs), t1 = Math.max(...xs);
  const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title});
  svg.append(s("title", {}, title));
  for (const f of [0, 0.5, 1]) {
    svg.append(s("line", {x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: "grid"}));
    svg.append(s("text", {x: L - 6, y: y(max * f) + 4, class: "axis", "text-anchor": "end"}, format(max * f)));
  }
  if (points.length) {
    svg.append(s("text", {x: L, y: H - 6, class: "axis"}, fmt.clock(t0)));
    svg.append(s("text", {x: W - R, y: H - 6, class: "axis", "text-anchor": "end"}, fmt.clock(t1)));
  }
  for (const l of lines) {
    const pts = points.filter((p) => p[l.key] !== null && p[l.key] !== undefined);
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[l.key]).toFixed(1)}`).join("");
    svg.append(s("path", {d, class: `line ${l.cls}`}));
    if (pts.length === 1) svg.append(s("circle", {cx: x(pts[0].t), cy: y(pts[0][l.key]), r: 3, class: `dot ${l.cls}`}));
  }
  const legend = h("div", {class: "legend"}, lines.map((l) => h("span", {class: `key ${l.cls}`}, l.label)));
  return h("figure", {class: "figure"}, svg, legend,
    points.length ? null : h("figcaption", {class: "empty"}, "no samples yet: figures appear within a few seconds"));
}

/* A bar of width value/max inside a cell, with the value written next to it. */
function bar(value, max, text) {
  const inner = h("span", {class: "bar-fill"});
  inner.style.width = `${max > 0 ? Math.max(0, Math.min(1, value / max)) * 100 : 0}%`;
  return h("span", {class: "bar"}, h("span", {class: "bar-track"}, inner), h("span", {class: "bar-text"}, text));
}
