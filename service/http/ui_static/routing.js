/* Routing: a playground (decision with every candidate's score and evidence, then the streamed answer;
   for k > 1 the candidates and which won) and the last routing decisions the gateway made. */
"use strict";

UI.views.routing = async function (root) {
  const info = await api("/ui/api/routers");
  const prompt = h("textarea", {id: "prompt", rows: 3, required: true, placeholder: "Ask something…",
    "aria-label": "Prompt"}, sessionStorage.getItem("conclave.prompt") || "What is 17 times 23?");
  const router = h("select", {id: "router", "aria-label": "Router"}, info.routers.map((r) =>
    h("option", {value: r, selected: r === info.default}, r === info.default ? `${r} (default)` : r)));
  const k = h("select", {id: "k", "aria-label": "Experts to ask (k)"},
    ["1", "2", "3", "4", "auto"].map((v) => h("option", {value: v}, v === "auto" ? "auto (until the vote is clear)" : v)));
  const maxTokens = h("input", {id: "max-tokens", type: "number", min: 1, max: 2048, value: 64, "aria-label": "Max tokens"});
  const decision = h("div", {id: "decision", "aria-live": "polite"});
  const answer = h("div", {id: "answer", "aria-live": "polite"});
  const go = h("button", {type: "submit", id: "go"}, "Route and answer");
  const form = h("form", {class: "playground", onsubmit: (e) => { e.preventDefault(); play(); }},
    h("label", {class: "wide"}, "Prompt", prompt),
    h("div", {class: "row"}, h("label", {}, "Router ", router), h("label", {}, "k ", k),
      h("label", {}, "Max tokens ", maxTokens), go));
  const recent = h("div", {id: "decisions"});
  root.append(h("h1", {}, "Routing"), section("Playground", form, decision, answer),
    section("Recent decisions", h("p", {class: "note"}, info.show_prompts
      ? "Prompt text is shown (CONCLAVE_UI_SHOW_PROMPTS is on)."
      : "Prompts are shown as a keyed hash and their length (CONCLAVE_UI_SHOW_PROMPTS is off)."), recent));

  async function play() {
    const kv = k.value === "auto" ? "auto" : Number(k.value);
    sessionStorage.setItem("conclave.prompt", prompt.value);
    go.disabled = true;
    clear(answer);
    clear(decision).append(h("p", {class: "note"}, "routing…"));
    try {
      const d = await api("/ui/api/route", {prompt: prompt.value, router: router.value, k: kv});
      clear(decision).append(showDecision(d));
      await stream(d.model, kv, answer, {prompt: prompt.value, router: router.value, max: Number(maxTokens.value) || 64});
    } catch (e) {
      clear(decision).append(h("p", {class: "err", role: "alert"}, e.message));
    } finally {
      go.disabled = false;
    }
  }
  every(5000, async () => {
    const d = await api("/ui/api/decisions?limit=30");
    clear(recent).append(decisionsTable(d.decisions));
  });
};

function evidence(ev) {
  const items = Object.entries(ev || {});
  if (!items.length) return "–";
  return h("dl", {class: "evidence"}, items.map(([key, v]) => [h("dt", {}, key),
    h("dd", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))]));
}

function showDecision(d) {
  const max = Math.max(0, ...d.candidates.map((c) => c.score));
  const weights = d.candidates.some((c) => c.weight !== undefined);
  const rows = d.candidates.map((c, i) => h("tr", {class: c.chosen ? "chosen" : ""},
    h("td", {}, i + 1), h("th", {scope: "row"}, c.expert, c.chosen ? h("span", {class: "badge ok"}, "chosen") : null),
    h("td", {}, bar(c.score, max, fmt.num(c.score, 4))), weights ? h("td", {}, fmt.num(c.weight, 4)) : null,
    h("td", {}, evidence(c.evidence))));
  return h("div", {class: "panel"},
    h("p", {}, h("strong", {}, `${d.router} → ${d.experts.join(", ")}`), ` (k = ${d.k}) `, h("span", {class: "sub"}, d.reason)),
    d.stopping ? h("p", {class: "sub"}, `stops when: ${JSON.stringify(d.stopping)}`) : null,
    table(["#", "Candidate", "Score", weights ? "Vote weight" : null, "Evidence"].filter((x) => x !== null), rows,
      {cls: "candidates", caption: "Every candidate, in the router's order"}));
}

/* POST /ui/api/chat (the same handler as /v1/chat/completions) and read its server-sent events. */
async function stream(model, k, out, ask) {
  const text = h("div", {id: "answer-text", class: "answer"});
  const who = h("p", {id: "answer-expert", class: "note"}, "waiting for the first token…");
  out.append(who, text);
  const t0 = performance.now();
  const body = {model, stream: true, max_tokens: ask.max, messages: [{role: "user", content: ask.prompt}],
    conclave: {router: ask.router, k, return_candidates: k !== 1}, stream_options: {include_usage: true}};
  const r = await fetch("/ui/api/chat", {method: "POST", body: JSON.stringify(body),
    headers: {"content-type": "application/json", "x-conclave-ui": "1"}});
  if (!r.ok) {
    const e = await r.json().catch(() => null);
    throw new ApiError(r.status, e && e.error ? e.error.message : `HTTP ${r.status}`);
  }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "", usage = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, cut).replace(/^data: /, "");
      buf = buf.slice(cut + 2);
      if (line === "[DONE]") { who.append(` · done in ${fmt.secs((performance.now() - t0) / 1000)}`); continue; }
      const ev = JSON.parse(line);
      if (ev.error) { out.append(h("p", {class: "err", role: "alert"}, ev.error.message)); continue; }
      if (ev.usage) usage = ev.usage;
      if (ev.conclave && ev.conclave.route) showAnswerer(who, ev.conclave, out);
      for (const c of ev.choices || []) if (c.delta && c.delta.content) text.append(c.delta.content);
    }
  }
  if (usage && usage.total_tokens) out.append(h("p", {class: "sub"}, `${fmt.int(usage.prompt_tokens)} prompt + ${fmt.int(usage.completion_tokens)} completion tokens`));
}

function showAnswerer(who, c, out) {
  clear(who).append("Answer from ", h("strong", {id: "answer-by"}, c.expert),
    c.fallback_from ? ` (after ${Object.keys(c.fallback_from).join(", ")} failed)` : "");
  const agg = c.aggregation;
  if (!agg || !agg.candidates) return;
  const winner = agg.winner || c.expert;
  out.append(table(["Candidate", "Answer", "Score"], agg.candidates.map((x) => h("tr", {class: x.expert === winner ? "chosen" : ""},
    h("th", {scope: "row"}, x.expert, x.expert === winner ? h("span", {class: "badge ok"}, "won") : null),
    h("td", {class: x.error ? "err" : ""}, x.error || x.text), h("td", {}, fmt.num(x.score, 4)))),
  {cls: "candidates", caption: `Candidates, aggregated by ${agg.aggregator}${agg.aggregated_by ? ` (${agg.aggregated_by})` : ""}`}));
}

function decisionsTable(list) {
  return table(["Time", "Prompt", "Router", "k", "Chosen", "Top scores", "Reason"], list.map((d) => h("tr", {},
    h("td", {}, fmt.clock(d.at)),
    h("td", {}, d.prompt.text !== undefined ? h("span", {class: "prompt"}, d.prompt.text)
      : h("span", {class: "mono"}, `#${d.prompt.hash}`), h("div", {class: "sub"}, `${fmt.int(d.prompt.chars)} chars`)),
    h("td", {}, d.router), h("td", {}, d.k), h("th", {scope: "row"}, d.experts.join(", ")),
    h("td", {}, d.candidates.slice(0, 3).map((c) => h("div", {}, `${c.expert} ${fmt.num(c.score, 3)}`))),
    h("td", {class: "sub"}, d.reason))), {cls: "decisions", empty: "no routed request yet (model conclave-auto or conclave-moe)"});
}
