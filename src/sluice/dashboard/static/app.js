// Sluice's live view: one snapshot a second from /debug/events (server-sent events), or by
// polling /debug/state where EventSource is not available. No dependencies, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = {
  s: (v) => (v === null || v === undefined ? "–" : v < 1 ? `${(v * 1000).toFixed(0)} ms` : `${v.toFixed(2)} s`),
  pct: (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(0)} %`),
  n: (v) => (v === null || v === undefined ? "–" : String(v)),
  rate: (v) => (v === null || v === undefined ? "–" : v.toFixed(1)),
  score: (v) => (v === null || v === undefined ? "–" : v.toFixed(3)),
};

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tableId, rows, columns, empty) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = columns;
    tr.append(td);
    body.append(tr);
  }
  for (const row of rows) body.append(row);
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c);
  for (const [k, v] of Object.entries(attrs || {})) tr.dataset[k] = v;
  return tr;
}

function shareBar(share, fair) {
  const td = document.createElement("td");
  const bar = document.createElement("span");
  bar.className = "share";
  const got = document.createElement("span");
  got.className = "got";
  got.style.width = `${Math.min(100, share * 100)}%`;
  const mark = document.createElement("span");
  mark.className = "fair";
  mark.style.left = `${Math.min(100, fair * 100)}%`;
  bar.append(got, mark);
  td.append(bar, document.createTextNode(`${fmt.pct(share)} of ${fmt.pct(fair)}`));
  return td;
}

let receipts = new Map();
let selected = null;

function render(s) {
  $("pool").textContent = s.pool;
  $("queued").textContent = s.queued;
  $("in-flight").textContent = s.in_flight;
  const at = new Date(s.at * 1000);
  $("status").textContent = `live · ${at.toLocaleTimeString()}`;
  $("status").className = "status live";

  fill("bands", s.bands.map((b) => row([
    cell(b.priority, "n"), cell(b.objectives.join(", ") || "–"), cell(b.queued, b.queued ? "n hot" : "n"),
    cell(b.in_flight, "n"), cell(fmt.s(b.wait_p50_s), "n"), cell(fmt.s(b.wait_p90_s), "n"),
    cell(fmt.s(b.wait_p99_s), "n"), cell(b.waits_sampled, "n"),
  ], { priority: b.priority })), 8, "no traffic yet");

  const tenants = [];
  for (const b of s.bands) for (const t of b.tenants) tenants.push(row([
    cell(b.priority, "n"), cell(t.fairness_id), cell(t.queued, t.queued ? "n hot" : "n"), cell(t.in_flight, "n"),
    cell(t.served_tokens, "n"), shareBar(t.share, t.fair_share),
  ], { priority: b.priority, tenant: t.fairness_id }));
  fill("tenants", tenants, 6, "no tenants yet");

  fill("endpoints", s.endpoints.map((e) => row([
    cell(`${e.name} (${e.address})`), cell(e.waiting, "n"), cell(e.running, "n"), cell(fmt.pct(e.kv_cache_usage), "n"),
    cell(e.pending_prefill_tokens, "n"), cell(e.in_flight, "n"),
    cell(e.age_s === null ? "never" : fmt.s(e.age_s), e.fresh ? "n" : "n stale"), cell(fmt.rate(e.req_per_s), "n"),
  ], { endpoint: e.name })), 8, "no endpoints in the pool");

  const reasons = Object.entries(s.rejections).sort((a, b) => b[1] - a[1]);
  fill("rejections", reasons.map(([r, n]) => row([cell(r), cell(n, "n")], { reason: r })), 2, "none");

  receipts = new Map();
  fill("decisions", s.decisions.map((d) => {
    receipts.set(String(d.seq), d);
    const sched = d.scheduling && d.scheduling.profiles.find((p) => p.name === d.scheduling.primary_profile);
    const score = sched && d.endpoint ? sched.totals[d.endpoint] : null;
    const tokens = d.completion_tokens === null ? "–" : `${d.prompt_tokens}+${d.completion_tokens}`;
    const tr = row([
      cell(d.request_id), cell(d.objective || "–"), cell(d.priority, "n"), cell(d.fairness_id),
      cell(fmt.s(d.waited_s), "n"), cell(d.held_by || "–"), cell(d.endpoint || d.reason || "–"),
      cell(fmt.score(score), "n"), cell(fmt.n(d.prefix_match_tokens), "n"),
      cell(d.outcome, `outcome-${d.outcome}`), cell(fmt.s(d.ttft_s), "n"), cell(tokens, "n"),
    ], { seq: d.seq });
    if (String(d.seq) === selected) tr.classList.add("selected");
    tr.addEventListener("click", () => show(String(d.seq)));
    return tr;
  }), 12, s.receipts ? "no decisions yet" : "decision receipts are off (--decision-receipts)");
  if (selected && receipts.has(selected)) show(selected);
}

function show(seq) {
  selected = seq;
  const pre = $("receipt");
  pre.hidden = false;
  pre.textContent = JSON.stringify(receipts.get(seq), null, 2);
  for (const tr of $("decisions").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.seq === seq);
  }
}

function down() {
  $("status").textContent = "disconnected, retrying…";
  $("status").className = "status down";
}

function poll() {
  fetch("/debug/state").then((r) => r.json()).then(render).catch(down)
    .finally(() => setTimeout(poll, 1000));
}

// The stream, or polling /debug/state a second (`?poll`, or no EventSource: a headless
// browser dumping the page after a virtual-time budget needs every request to end).
if (window.EventSource && !new URLSearchParams(location.search).has("poll")) {
  const events = new EventSource("/debug/events");
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.onerror = down;
} else {
  poll();
}
