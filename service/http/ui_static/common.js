/* Conclave dashboard: shared helpers (DOM building without innerHTML, API calls, number formats). */
"use strict";

const UI = {views: {}, timers: []};

/* h("div", {class: "x"}, "text", child, [more]) -> an element; attributes on* become listeners. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/* JSON from the gateway; POSTs carry X-Conclave-UI (the gateway refuses dashboard actions without it). */
async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", body: JSON.stringify(body),
    headers: {"content-type": "application/json", "x-conclave-ui": "1"}};
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!r.ok) {
    const msg = data && data.error ? data.error.message : `HTTP ${r.status}`;
    throw new ApiError(r.status, msg);
  }
  return data;
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("bad", !!bad);
}

/* Numbers with units. */
const fmt = {
  int(n) { return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"); },
  num(n, d = 2) { return n === null || n === undefined ? "–" : Number(n).toFixed(d); },
  secs(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  },
  rate(n, unit) { return n === null || n === undefined ? "–" : `${Number(n).toFixed(n < 10 ? 2 : 1)} ${unit}/s`; },
  pct(x) { return x === null || x === undefined || isNaN(x) ? "–" : `${(100 * x).toFixed(0)} %`; },
  mb(n) { return n === null || n === undefined ? "–" : `${fmt.int(n)} MB`; },
  ago(s) { return s === null || s === undefined ? "–" : `${fmt.secs(s)} ago`; },
  clock(t) { return new Date(t * 1000).toLocaleTimeString("en-GB"); },
};

function table(headers, rows, opts = {}) {
  const head = h("thead", {}, h("tr", {}, headers.map((x) => h("th", {scope: "col"}, x))));
  const body = h("tbody", {}, rows.length ? rows
    : h("tr", {}, h("td", {colspan: headers.length, class: "empty"}, opts.empty || "nothing yet")));
  return h("div", {class: "scroll"}, h("table", {class: opts.cls || "", id: opts.id}, opts.caption ? h("caption", {}, opts.caption) : null, head, body));
}

function card(label, value, sub) {
  return h("div", {class: "card"}, h("div", {class: "label"}, label), h("div", {class: "value"}, value),
    sub ? h("div", {class: "sub"}, sub) : null);
}

function section(title, ...children) { return h("section", {}, h("h2", {}, title), children); }

/* Run fn now and every ms while the page is open (each view is its own page). */
function every(ms, fn) {
  const run = async () => {
    try { await fn(); setStatus(`updated ${new Date().toLocaleTimeString("en-GB")}`); }
    catch (e) { setStatus(e.message, true); }
  };
  run();
  UI.timers.push(setInterval(run, ms));
}
