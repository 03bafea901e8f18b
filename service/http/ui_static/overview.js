/* Overview: requests/s, latency, errors, tokens, experts and routing over the chosen window. */
"use strict";

UI.views.overview = function (root) {
  let win = Number(sessionStorage.getItem("conclave.window") || 300);
  const pick = h("select", {id: "window", "aria-label": "Window",
    onchange: (e) => { win = Number(e.target.value); sessionStorage.setItem("conclave.window", win); refresh(); }},
  [[60, "last minute"], [300, "last 5 minutes"], [900, "last 15 minutes"], [3600, "last hour"]].map(
    ([v, t]) => h("option", {value: v, selected: v === win}, t)));
  const body = h("div", {id: "overview-body"});
  root.append(h("div", {class: "toolbar"}, h("h1", {}, "Overview"), h("label", {}, "Window ", pick)), body);

  async function refresh() {
    const o = await api(`/ui/api/overview?window=${win}`);
    clear(body).append(...render(o));
  }
  every(3000, refresh);
};

function render(o) {
  const r = o.requests, errs = (r.status["4xx"] || 0) + (r.status["5xx"] || 0);
  const tok = o.tokens.prompt + o.tokens.completion;
  const routed = o.routing.routed, direct = o.routing.direct;
  const span = `over ${fmt.secs(o.seconds)}`;
  const cards = h("div", {class: "cards"},
    card("Chat requests", fmt.int(r.count), `${fmt.rate(r.per_s, "req")} · ${span}`),
    card("Latency p50", fmt.secs(o.latency_s.p50), `mean ${fmt.secs(o.latency_s.mean)} · chat routes`),
    card("Latency p99", fmt.secs(o.latency_s.p99), "from histogram buckets"),
    card("Chat errors", fmt.int(errs), `${fmt.int(r.status["4xx"] || 0)} × 4xx · ${fmt.int(r.status["5xx"] || 0)} × 5xx`),
    card("Tokens", fmt.int(tok), `${fmt.int(o.tokens.prompt)} prompt · ${fmt.int(o.tokens.completion)} completion`),
    card("Routed share", fmt.pct(routed + direct ? routed / (routed + direct) : NaN),
      `${fmt.int(routed)} routed · ${fmt.int(direct)} direct`));
  cards.querySelector(".card .value").id = "request-count";
  const series = o.series;
  const charts = h("div", {class: "charts"},
    lineChart(series, [{key: "per_s", label: "requests/s", cls: "a"}], (v) => fmt.rate(v, "req"), "Chat requests per second"),
    lineChart(series, [{key: "p50_s", label: "p50", cls: "a"}, {key: "p99_s", label: "p99", cls: "b"}],
      fmt.secs, "Chat latency p50 and p99"));
  const maxCalls = Math.max(0, ...o.experts.map((e) => e.calls));
  const experts = table(["Expert", "Calls", "Failed", "p50", "p99", "Tokens"], o.experts.map((e) => h("tr", {},
    h("th", {scope: "row"}, e.expert), h("td", {}, bar(e.calls, maxCalls, fmt.int(e.calls))),
    h("td", {class: e.failed ? "bad" : ""}, fmt.int(e.failed)), h("td", {}, fmt.secs(e.p50_s)),
    h("td", {}, fmt.secs(e.p99_s)), h("td", {}, fmt.int(e.tokens)))), {empty: "no expert was called in this window"});
  const errors = table(["Kind", "Count"], Object.entries(o.errors).map(([k, v]) =>
    h("tr", {}, h("th", {scope: "row"}, k), h("td", {}, fmt.int(v)))), {empty: "no errors in this window"});
  const routers = table(["Router", "Decisions"], Object.entries(o.routing.by_router).map(([k, v]) =>
    h("tr", {}, h("th", {scope: "row"}, k), h("td", {}, fmt.int(v)))), {empty: "no routed requests in this window"});
  return [cards, charts, h("div", {class: "grid2"}, section("Experts", experts),
    h("div", {}, section("Errors by kind (all routes)", errors), section("Routers", routers))),
  h("p", {class: "note"}, `Since start (${fmt.secs(o.uptime_s)}): ${fmt.int(o.since_start.count)} chat requests. `,
    "Latency quantiles are read from the Prometheus histogram buckets, so they are as coarse as the buckets.")];
}
