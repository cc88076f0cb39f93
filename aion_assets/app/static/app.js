// AION search — browser page. Plain ES2020, no build step, same-origin JSON API.
"use strict";

const MODELS_POLL_MS = 5000;
const EAGER_IMAGES = 24; // the first screenful loads at once, the rest lazily
const $ = (sel) => document.querySelector(sel);

const state = {
  models: null,          // last /api/models answer
  modelsSignature: "",   // to rebuild the picker only when the versions change
  requestSeq: 0,         // guards the gallery against out-of-order responses
  detail: null,          // object shown in the detail dialog
};

// ---------- small helpers ----------

// Build an element; children may be strings or nodes. Text never goes through innerHTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// Null-safe number formatting; "–" keeps table columns and info lines aligned.
function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

function formatValue(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(7)));
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// GET a JSON endpoint; turn the API's {"error": ...} body into a thrown Error.
async function apiGet(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const url = query.toString() ? `${path}?${query}` : path;
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (err) {
    throw new Error(`network error: ${err.message}`);
  }
  let body = null;
  try { body = await response.json(); } catch { /* non-JSON body, handled below */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `HTTP ${response.status} ${response.statusText}`);
  }
  return body;
}

// Make sure a select can show a value coming from the URL, even before /api/models answers.
function ensureOption(select, value, text = value) {
  if (value && ![...select.options].some((o) => o.value === value)) {
    select.append(el("option", { value }, text));
  }
  select.value = value;
}

// ---------- models, releases, rerank ----------

function versionLabel(v) {
  const ndcg = v.ndcg_at_10_release ?? v.ndcg_at_10_survey;
  const tags = [`v${v.version}`, `nDCG@10 ${fmt(ndcg, 2)}`];
  if (v.production) tags.push("production");
  return tags.join(" · ");
}

function renderModelPicker(models) {
  const select = $("#model-version");
  const selected = select.value;
  const versions = models.versions.filter((v) => v.has_index).sort((a, b) => b.version - a.version);
  const signature = JSON.stringify([models.default_version, versions]);
  if (signature === state.modelsSignature) return; // unchanged: don't disturb an open select
  state.modelsSignature = signature;

  const latest = models.default_version == null ? "latest" : `latest (v${models.default_version})`;
  select.replaceChildren(
    el("option", { value: "" }, latest),
    ...versions.map((v) => el("option", { value: v.version }, versionLabel(v))),
  );
  // Keep the user's choice even if that version stopped being listed.
  ensureOption(select, selected, `v${selected} (not listed)`);
}

function renderReleases(models) {
  const select = $("#release");
  const selected = select.value;
  const wanted = ["", ...models.releases];
  const current = [...select.options].map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(wanted)) {
    select.replaceChildren(
      el("option", { value: "" }, "all releases"),
      ...models.releases.map((r) => el("option", { value: r }, r)),
    );
  }
  ensureOption(select, selected);
}

// Headline figures of the version that searches will use right now.
function renderModelInfo() {
  const info = $("#model-info");
  const models = state.models;
  if (!models) { info.textContent = "–"; return; }
  const chosen = $("#model-version").value;
  const number = chosen ? Number(chosen) : models.default_version;
  const v = models.versions.find((x) => x.version === number);
  if (!v) { info.textContent = number == null ? "no model served" : `v${number} · –`; return; }
  const item = (name, value) => el("span", { class: "info-item" }, el("span", { class: "info-name" }, name), " ", value);
  info.replaceChildren(
    el("strong", {}, `v${v.version}`),
    item("MRR", fmt(v.val_mrr_mean)),
    item("nDCG@10 release", fmt(v.ndcg_at_10_release)),
    item("nDCG@10 survey", fmt(v.ndcg_at_10_survey)),
    item("n_train", v.n_train == null ? "–" : v.n_train.toLocaleString("en")),
  );
}

async function loadModels({ quiet = true } = {}) {
  try {
    const models = await apiGet("/api/models");
    state.models = models;
    renderModelPicker(models);
    renderReleases(models);
    $("#rerank-control").hidden = !models.rerank_available;
    if (!models.rerank_available) $("#rerank").checked = false;
    renderModelInfo();
  } catch (err) {
    // Polling failures are transient; only the first load reports them.
    if (!quiet) setStatus(`could not load models: ${err.message}`, true);
  }
}

// ---------- URL state ----------

function updateUrl(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "" && value !== false) query.set(key, String(value));
  }
  const url = `/?${query}`;
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

// Run whatever the URL describes (page load and back/forward).
function runFromUrl() {
  const params = new URLSearchParams(location.search);
  if (params.has("similar")) {
    if (params.has("k")) $("#k").value = params.get("k");
    runSimilar(params.get("similar"), params.get("release") || "", { pushUrl: false });
  } else if (params.has("q")) {
    $("#query").value = params.get("q");
    if (params.has("k")) $("#k").value = params.get("k");
    ensureOption($("#release"), params.get("release") || "");
    const version = params.get("model_version") || "";
    ensureOption($("#model-version"), version, `v${version}`);
    $("#rerank").checked = params.get("rerank") === "true";
    renderModelInfo();
    runSearch({ pushUrl: false });
  } else if (params.has("ra") && params.has("dec")) {
    $("#cone-ra").value = params.get("ra");
    $("#cone-dec").value = params.get("dec");
    if (params.has("radius_arcsec")) $("#cone-radius").value = params.get("radius_arcsec");
    $("#cone-panel").open = true;
    runCone({ pushUrl: false });
  }
}

// ---------- searches ----------

function readK() {
  const raw = $("#k").value.trim();
  const k = Math.round(Number(raw));
  // An empty or junk field means the default, not a single result.
  return raw !== "" && Number.isFinite(k) ? Math.min(1000, Math.max(1, k)) : 24;
}

// Shared wrapper: show progress, drop stale answers, report errors in #status.
async function runRequest(label, request, onResult) {
  const seq = ++state.requestSeq;
  setStatus(`${label}…`);
  $("#gallery").setAttribute("aria-busy", "true");
  try {
    const data = await request();
    if (seq !== state.requestSeq) return; // a newer request has taken over
    onResult(data);
  } catch (err) {
    if (seq === state.requestSeq) setStatus(err.message, true);
  } finally {
    if (seq === state.requestSeq) $("#gallery").removeAttribute("aria-busy");
  }
}

function runSearch({ pushUrl = true } = {}) {
  const q = $("#query").value.trim();
  if (!q) { setStatus("type a description to search", true); return; }
  const params = {
    q,
    k: readK(),
    release: $("#release").value,
    model_version: $("#model-version").value,
    rerank: !$("#rerank-control").hidden && $("#rerank").checked ? "true" : "",
  };
  if (pushUrl) updateUrl(params);
  return runRequest(`searching for “${q}”`, () => apiGet("/api/search", params), (data) => {
    renderGallery(data.results, "score");
    const parts = [`${data.results.length} results for “${data.query}”`];
    if (data.release) parts.push(data.release);
    parts.push(`model v${data.model_version}`);
    if (data.reranked) parts.push("reranked");
    parts.push(`${Math.round(data.latency_ms)} ms`);
    setStatus(parts.join(" · "));
  });
}

function runSimilar(objectId, release, { pushUrl = true } = {}) {
  const k = readK();
  if (pushUrl) updateUrl({ similar: objectId, release });
  const path = `/api/similar/${encodeURIComponent(objectId)}`;
  return runRequest(`finding objects similar to ${objectId}`, () => apiGet(path, { k, release }), (data) => {
    renderGallery(data.results, "score");
    setStatus(`${data.results.length} results similar to ${data.object_id} (${data.release})`);
  });
}

function runCone({ pushUrl = true } = {}) {
  const ra = Number($("#cone-ra").value);
  const dec = Number($("#cone-dec").value);
  const radius = Number($("#cone-radius").value || 60);
  if (![ra, dec, radius].every(Number.isFinite)) { setStatus("enter RA, Dec and radius as numbers", true); return; }
  const params = { ra, dec, radius_arcsec: radius, k: readK() };
  if (pushUrl) updateUrl({ ra, dec, radius_arcsec: radius });
  return runRequest("cone search", () => apiGet("/api/cone", params), (data) => {
    renderGallery(data.results, "separation");
    setStatus(`${data.results.length} objects within ${data.radius_arcsec}″ of (${fmt(data.ra, 5)}, ${fmt(data.dec, 5)})`);
  });
}

// ---------- gallery ----------

// mode "score" shows the model score; mode "separation" the cone distance.
function renderTile(result, index, mode) {
  const figure = prepareTile(result, index);
  const metric = mode === "separation"
    ? el("span", { class: "metric" }, `${fmt(result.separation_arcsec, 2)}″`)
    : el("span", { class: "metric" }, fmt(result.score, 3));
  figure.append(el("figcaption", {},
    el("div", { class: "caption-top" }, el("span", { class: "rank" }, `#${result.rank}`), metric),
    el("div", { class: "object-id", title: result.object_id }, result.object_id),
    el("div", { class: "release" }, result.release),
    el("div", { class: "tile-actions" },
      el("button", { type: "button", class: "more-like-this", onclick: () => runSimilar(result.object_id, result.release) }, "More like this"),
      el("button", { type: "button", class: "details", onclick: () => openDetail(result.object_id, result.release) }, "Details"),
    ),
  ));
  return figure;
}

function prepareTile(result, index) {
  const img = el("img", {
    src: result.cutout_url,
    alt: result.object_id,
    loading: index < EAGER_IMAGES ? "eager" : "lazy",
    decoding: "async",
  });
  img.addEventListener("click", () => openDetail(result.object_id, result.release));
  img.addEventListener("error", () => img.classList.add("broken"));
  return el("figure", { class: "result", dataset: { objectId: result.object_id, release: result.release } }, img);
}

function renderGallery(results, mode) {
  const gallery = $("#gallery");
  gallery.replaceChildren(...results.map((r, i) => renderTile(r, i, mode)));
  if (!results.length) gallery.append(el("p", { class: "empty" }, "No results."));
}

// ---------- detail dialog ----------

function keyValueTable(caption, data) {
  const entries = Object.entries(data || {});
  if (!entries.length) return el("section", {}, el("h3", {}, caption), el("p", { class: "muted" }, "none"));
  return el("section", {}, el("h3", {}, caption), el("table", { class: "kv" },
    el("tbody", {}, entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, formatValue(v))))),
  ));
}

function describe(description) {
  if (!description) return el("section", {}, el("h3", {}, "Description"), el("p", { class: "muted" }, "no recorded description"));
  return el("section", { class: "description" },
    el("h3", {}, "Description"),
    el("p", {}, el("strong", {}, description.summary || "")),
    el("p", {}, description.description || ""),
    el("p", {}, el("small", { class: "muted" }, `model ${description.model} · prompt ${description.prompt_version}`)),
  );
}

function renderDetail(obj) {
  $("#detail-title").textContent = obj.object_id;
  $("#detail-image").src = obj.cutout_url;
  $("#detail-image").alt = obj.object_id;
  const c = obj.coordinates;
  $("#detail-cone").hidden = !c;
  $("#detail-body").replaceChildren(
    el("p", { class: "detail-meta" },
      el("span", {}, `release ${obj.release}`),
      c ? el("span", {}, `RA ${fmt(c.ra, 5)}° · Dec ${fmt(c.dec, 5)}°`) : null),
    keyValueTable("Labels", obj.labels),
    describe(obj.description),
    keyValueTable("Catalogue", obj.catalogue),
  );
}

async function openDetail(objectId, release) {
  const dialog = $("#detail");
  state.detail = { object_id: objectId, release, coordinates: null };
  $("#detail-title").textContent = objectId;
  $("#detail-image").removeAttribute("src");
  $("#detail-cone").hidden = true;
  $("#detail-body").replaceChildren(el("p", { class: "muted" }, "loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    const obj = await apiGet(`/api/objects/${encodeURIComponent(objectId)}`, { release });
    if (state.detail.object_id !== objectId) return; // another object was opened meanwhile
    state.detail = obj;
    renderDetail(obj);
  } catch (err) {
    $("#detail-body").replaceChildren(el("p", { class: "error" }, err.message));
    setStatus(err.message, true);
  }
}

function detailSimilar() {
  const { object_id, release } = state.detail || {};
  if (!object_id) return;
  $("#detail").close();
  runSimilar(object_id, release);
}

function detailCone() {
  const c = state.detail && state.detail.coordinates;
  if (!c) return;
  $("#cone-ra").value = c.ra;
  $("#cone-dec").value = c.dec;
  if (!$("#cone-radius").value) $("#cone-radius").value = 60;
  $("#cone-panel").open = true;
  $("#detail").close();
  runCone();
}

// ---------- wiring ----------

function bindEvents() {
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  $("#cone-form").addEventListener("submit", (e) => { e.preventDefault(); runCone(); });
  $("#model-version").addEventListener("change", renderModelInfo);
  $("#detail-close").addEventListener("click", () => $("#detail").close());
  $("#detail-similar").addEventListener("click", detailSimilar);
  $("#detail-cone").addEventListener("click", detailCone);
  // Clicking the backdrop (outside the dialog box) closes it too; Escape is native.
  $("#detail").addEventListener("click", (e) => { if (e.target === e.currentTarget) e.currentTarget.close(); });
  window.addEventListener("popstate", runFromUrl);
}

async function init() {
  bindEvents();
  // Models first so the URL's release/version land in populated selects; search even if it fails.
  await loadModels({ quiet: false });
  runFromUrl();
  setInterval(loadModels, MODELS_POLL_MS);
}

document.addEventListener("DOMContentLoaded", init);
