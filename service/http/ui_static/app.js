/* Conclave dashboard: picks the view from the address (/ui, /ui/experts, /ui/routing, /ui/workers). */
"use strict";

function start() {
  const page = location.pathname.replace(/^\/ui\/?/, "").replace(/\/$/, "") || "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
  }
  const root = document.getElementById("view");
  clear(root);
  const view = UI.views[page];
  if (!view) { root.append(h("p", {class: "err"}, `no such view: ${page}`)); return; }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Conclave`;
  Promise.resolve(view(root)).catch((e) => setStatus(e.message, true));
}

document.addEventListener("DOMContentLoaded", start);
