/* Experts: the registry, health (circuit breaker, recent error, window figures) and a ping button. */
"use strict";

UI.views.experts = function (root) {
  const body = h("div", {id: "experts-body"});
  const pings = {};   // expert -> last ping result, kept across refreshes
  root.append(h("h1", {}, "Experts"), body);

  async function refresh() {
    const [experts, o] = await Promise.all([api("/ui/api/experts"), api("/ui/api/overview?window=300")]);
    const stats = Object.fromEntries(o.experts.map((e) => [e.expert, e]));
    const headers = ["Expert", "Backend / model", "Skills", "Capabilities", "Size & cost", "Health", "Last 5 min",
      "Ping"];
    clear(body).append(table(headers, experts.map((e) => row(e, stats[e.name], pings, refresh)),
      {cls: "experts", empty: "no experts registered: conclave experts add …"}));
  }
  every(5000, refresh);
};

function row(e, st, pings, refresh) {
  const b = e.breaker;
  const state = h("span", {class: `badge ${b.state === "closed" ? "ok" : "bad"}`}, b.state === "closed" ? "healthy" : `breaker ${b.state}`);
  const health = h("td", {}, state, b.failures ? h("div", {class: "sub"}, `${b.failures} failure(s) in a row`) : null,
    b.retry_in_s ? h("div", {class: "sub"}, `retry in ${fmt.secs(b.retry_in_s)}`) : null,
    b.last_error ? h("div", {class: "sub err"}, `${fmt.ago(b.last_error_age_s)}: ${b.last_error}`) : null);
  const size = [e.params_b ? `${fmt.num(e.params_b, 3)} B params` : null,
    e.active_params_b ? `${fmt.num(e.active_params_b, 3)} B active` : null,
    e.price_per_mtok !== null && e.price_per_mtok !== undefined ? `$${fmt.num(e.price_per_mtok)} / M tokens` : null,
    `${fmt.int(e.context_length)} tokens context`, e.memory_mb ? fmt.mb(e.memory_mb) : null].filter(Boolean);
  const out = h("div", {class: "ping-out", "aria-live": "polite"}, pingText(pings[e.name]));
  const btn = h("button", {type: "button", class: "ping", "data-expert": e.name, onclick: async () => {
    btn.disabled = true;
    out.textContent = "pinging…";
    try { pings[e.name] = await api(`/ui/api/experts/${encodeURIComponent(e.name)}/ping`, {}); }
    catch (err) { pings[e.name] = {ok: false, error: err.message}; }
    btn.disabled = false;
    out.textContent = pingText(pings[e.name]);
    out.classList.toggle("err", !pings[e.name].ok);
  }}, "Ping");
  return h("tr", {},
    h("th", {scope: "row"}, h("div", {}, e.name), h("div", {class: "sub"}, e.description)),
    h("td", {}, h("div", {}, e.backend + (e.served_by !== e.backend ? ` (via ${e.served_by})` : "")),
      h("div", {class: "sub mono"}, e.model), h("div", {class: "sub"}, `${e.prompt_style} prompts`)),
    h("td", {}, e.skills.length ? e.skills.map((x) => h("span", {class: "tag"}, x)) : "–"),
    h("td", {}, e.capabilities.length ? e.capabilities.map((x) => h("span", {class: "tag cap"}, x)) : "none",
      e.capabilities_default ? h("div", {class: "sub"}, "backend default") : null),
    h("td", {}, size.map((x) => h("div", {}, x))),
    health,
    h("td", {}, st ? [h("div", {}, `${fmt.int(st.calls)} calls, ${fmt.int(st.failed)} failed`),
      h("div", {class: "sub"}, `p50 ${fmt.secs(st.p50_s)} · p99 ${fmt.secs(st.p99_s)}`)] : "no calls"),
    h("td", {}, btn, out));
}

function pingText(p) {
  if (!p) return "";
  return p.ok ? `answered in ${fmt.secs(p.seconds)}: “${p.text.trim()}”` : `failed${p.seconds ? ` after ${fmt.secs(p.seconds)}` : ""}: ${p.error}`;
}
