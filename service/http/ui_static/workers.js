/* Workers: with the Redis queue, each worker (what it holds, in which tier when reported), the queue per
   expert and loads over time; without it, says so and shows the in-process scheduler. */
"use strict";

UI.views.workers = function (root) {
  const body = h("div", {id: "workers-body"});
  root.append(h("h1", {}, "Workers"), body);
  every(5000, async () => clear(body).append(...renderWorkers(await api("/ui/api/workers"))));
};

function renderWorkers(w) {
  if (w.queue !== "redis") return [h("p", {class: "panel note", id: "no-queue"}, w.message), localScheduler(w.local || {})];
  const tiers = w.workers.some((x) => x.tiers);
  const workers = table(["Worker", "State", "Heartbeat", "Kind", "Capacity", "Holds", "Loads / unloads", "Jobs", "Busy"],
    w.workers.map((x) => h("tr", {},
      h("th", {scope: "row"}, x.name), h("td", {}, h("span", {class: `badge ${x.alive ? "ok" : "bad"}`}, x.alive ? "live" : "gone")),
      h("td", {}, fmt.ago(x.heartbeat_age_s)), h("td", {}, x.kind || "–"),
      h("td", {}, `${x.max_models} model(s)`, x.memory_mb ? h("div", {class: "sub"}, fmt.mb(x.memory_mb)) : null),
      h("td", {}, x.holds.length ? x.holds.map((e) => h("span", {class: "tag"}, tiers && x.tiers && x.tiers[e] ? `${e} · ${x.tiers[e]}` : e)) : "nothing"),
      h("td", {}, counts(x.loads), h("div", {class: "sub"}, counts(x.unloads))),
      h("td", {}, fmt.int(x.jobs)), h("td", {}, fmt.secs(x.busy_s)))), {id: "worker-table", empty: "no worker registered: start 'conclave worker'"});
  const queue = table(["Expert", "Queued jobs", "Held by"], Object.entries(w.placement).map(([e, p]) => h("tr", {},
    h("th", {scope: "row"}, e), h("td", {}, fmt.int(p.queued)),
    h("td", {}, Object.keys(p.holders).length ? Object.entries(p.holders).map(([n, s]) => h("span", {class: "tag"}, `${n} (${s})`)) : "nobody"))),
  {id: "queue-table", empty: "no expert queued through Redis yet"});
  return [w.message ? h("p", {class: "err"}, w.message) : null,
    h("p", {class: "note"}, `${fmt.int(w.loads_total || 0)} model loads in all.`), section("Workers", workers),
    section("Queue per expert", queue),
    section("Over time", lineChart(w.history, [{key: "loads", label: "loads", cls: "a"}, {key: "queued", label: "queued jobs", cls: "b"},
      {key: "live", label: "live workers", cls: "c"}], (v) => fmt.num(v, 1), "Loads, queued jobs and live workers over time"))].filter(Boolean);
}

function counts(obj) {
  const items = Object.entries(obj || {});
  return items.length ? items.map(([e, n]) => `${e}: ${n}`).join(", ") : "–";
}

function localScheduler(stats) {
  const rows = Object.entries(stats).map(([kind, s]) => h("tr", {}, h("th", {scope: "row"}, kind),
    h("td", {}, counts(s.loads_by_expert)), h("td", {}, fmt.int(s.unloads)), h("td", {}, fmt.int(s.jobs)),
    h("td", {}, `${fmt.int(s.batches)} (mean ${fmt.num(s.batch_size_mean, 1)})`),
    h("td", {}, `p50 ${fmt.secs(s.wait.p50)} · p99 ${fmt.secs(s.wait.p99)}`)));
  return section("In-process scheduler", table(["Kind", "Loads", "Unloads", "Jobs", "Batches", "Queue wait"], rows,
    {empty: "no local model has run in this gateway yet"}));
}
