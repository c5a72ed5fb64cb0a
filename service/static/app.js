// The results page: upload a video (XHR, for upload progress), follow the job, draw the result.
// No framework and no build step; the two charts are SVG drawn here. Everything that comes from the server is
// put on the page with textContent (never as HTML).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STAGES = ["upload", "queued", "preprocessing", "inferring", "done"];
const POLL_MS = 400;
// Words for codes whose title alone does not say what to do next (the title and detail are always shown).
const HINTS = {
  not_a_video: "Choose a video file (mp4, mov, webm, mkv or avi).",
  unauthorised: "Enter a valid API key above.",
  upload_too_large: "Choose a shorter or smaller video.",
  video_too_long: "Choose a shorter video.",
  video_too_short: "Choose a longer video.",
  no_face: "The face must be visible and turned towards the camera.",
  too_few_face_clips: "The face must be visible for longer stretches of the video.",
  face_orientation: "Record the video with the face upright.",
  too_many_jobs: "Wait for one of this key's jobs to finish, then try again.",
  queue_unavailable: "The service is busy or restarting; try again in a moment.",
  backend_unavailable: "The model is not available right now; try again in a moment.",
  idempotency_key_in_use: "The same upload is still being received; wait a moment.",
};

const $ = (id) => document.getElementById(id);
let config = { api_key_required: false, max_upload_bytes: 0, bands: [], min_score: 0, max_score: 63 };
let current = { jobId: null, idempotencyKey: null, objectUrls: [] };

document.addEventListener("DOMContentLoaded", init);

async function init() {
  $("upload-form").addEventListener("submit", onSubmit);
  // A new choice is a new request: it gets a new Idempotency-Key (the same key with another upload is refused).
  $("video").addEventListener("change", () => { current.idempotencyKey = null; });
  $("faces-preview").addEventListener("change", () => { current.idempotencyKey = null; });
  $("delete-job").addEventListener("click", onDelete);
  try {
    config = await (await fetch("/ui/config")).json();
  } catch (e) { /* the page still works; the first request's error says what is wrong */ }
  $("api-key-field").hidden = !config.api_key_required;
  if (config.max_upload_bytes) $("max-size").textContent = formatBytes(config.max_upload_bytes);
  try {
    const models = await (await fetch("/models")).json();
    if (models.models && models.models.some((m) => m.synthetic_demo)) $("synthetic-banner").hidden = false;
  } catch (e) { /* /models unavailable: the result's own model card still sets the banner */ }
  document.body.dataset.ready = "true";  // the form reflects the service's settings (e.g. the API-key field) from here
}

// ---------------------------------------------------------------------------------------------- submitting
function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function headers() {
  const h = {};
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

async function onSubmit(ev) {
  ev.preventDefault();
  clearError();
  const file = $("video").files[0];
  if (!file) {
    showError({ title: "Choose a video first.", code: null });
    $("video").focus();
    return;
  }
  if (config.api_key_required && !$("api-key").value.trim()) {
    showError({ title: "This service needs an API key.", code: null });
    $("api-key").focus();
    return;
  }
  // One key per chosen file: pressing the button again after a network failure retries the same request, and
  // the service answers with the first attempt's job instead of starting a second one.
  if (!current.idempotencyKey) current.idempotencyKey = newKey();
  $("submit").disabled = true;
  $("results").hidden = true;
  $("progress-section").hidden = false;
  setStage("upload");
  setProgress("upload", 0, file.size);
  setProgress("job", 0);
  $("status-text").textContent = "Uploading the video…";
  try {
    const job = await upload(file);
    current.jobId = job.id;
    setProgress("upload", 1, file.size);
    $("status-text").textContent = "Uploaded. The job is " + job.status + ".";
    const finished = await follow(job);
    if (finished.status === "done") {
      await showResult(finished);
      current.idempotencyKey = null;
    } else {
      showError(finished.error, finished.id);
      current.idempotencyKey = null;
    }
  } catch (err) {
    showError(err.problem || { title: err.message || String(err), code: null });
  } finally {
    $("submit").disabled = false;
  }
}

function upload(file) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("video", file, file.name);
    if ($("faces-preview").checked) form.append("faces_preview", "true");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/jobs");
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Idempotency-Key", current.idempotencyKey);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) setProgress("upload", e.loaded / e.total, e.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: said below */ }
      if (xhr.status === 202 && body) resolve(body);
      else reject(problemError(body, xhr.status));
    });
    xhr.addEventListener("error", () => reject(new Error(
      "The upload did not reach the service (network error). Press the button again to retry: the retry is safe.")));
    xhr.addEventListener("timeout", () => reject(new Error("The upload timed out. Press the button again to retry.")));
    xhr.send(form);
  });
}

function problemError(body, status) {
  const err = new Error("HTTP " + status);
  err.problem = body && body.code ? body : { title: "The service answered HTTP " + status + ".", code: null };
  return err;
}

async function follow(job) {
  while (job.status !== "done" && job.status !== "failed") {
    setStage(job.status);
    setProgress("job", job.progress);
    $("status-text").textContent = stageText(job.status);
    await sleep(POLL_MS);
    const r = await fetch("/jobs/" + encodeURIComponent(job.id), { headers: headers() });
    const body = await r.json().catch(() => null);
    if (!r.ok) throw problemError(body, r.status);
    job = body;
  }
  setStage(job.status === "done" ? "done" : null);
  setProgress("job", job.status === "done" ? 1 : job.progress);
  $("status-text").textContent = job.status === "done" ? "Done." : "The job failed.";
  return job;
}

function stageText(status) {
  return { queued: "Waiting for a worker…", preprocessing: "Finding the face and cutting clips…",
           inferring: "Scoring the clips…" }[status] || status;
}

function setStage(stage) {
  const at = STAGES.indexOf(stage);
  for (const li of $("stages").children) {
    const i = STAGES.indexOf(li.dataset.stage);
    li.classList.toggle("complete", at >= 0 && (i < at || (stage === "done" && i === at)));
    li.classList.toggle("current", i === at && stage !== "done");
    if (i === at && stage !== "done") li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
}

function setProgress(which, fraction, total) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  $(which + "-progress").value = f;
  $(which + "-text").textContent = Math.round(f * 100) + " %" +
    (total ? " of " + formatBytes(total) : "");
}

// ---------------------------------------------------------------------------------------------- errors
function clearError() {
  const box = $("error");
  box.hidden = true;
  box.replaceChildren();
}

function showError(problem, jobId) {
  const box = $("error");
  box.replaceChildren();
  const p = problem || { title: "Unknown error", code: null };
  const title = document.createElement("p");
  const strong = document.createElement("strong");
  strong.textContent = p.title || "Error";
  title.append(strong);
  box.append(title);
  if (p.detail) {
    const d = document.createElement("p");
    d.textContent = "Details: " + p.detail;
    box.append(d);
  }
  if (p.code && HINTS[p.code]) {
    const h = document.createElement("p");
    h.textContent = HINTS[p.code];
    box.append(h);
  }
  if (p.code) {
    const c = document.createElement("p");
    c.className = "code";
    c.append("Error code: ");
    const code = document.createElement("code");
    code.textContent = p.code;
    c.append(code);
    if (p.status) c.append(" (HTTP " + p.status + ")");
    if (jobId) c.append(", job " + jobId);
    box.append(c);
  }
  box.hidden = false;
  box.focus();
}

// ---------------------------------------------------------------------------------------------- the result
async function showResult(job) {
  const r = job.result;
  for (const u of current.objectUrls) URL.revokeObjectURL(u);
  current.objectUrls = [];
  $("score").textContent = r.bdi_score.toFixed(1);
  $("interval").textContent = Math.round(r.interval.mass * 100) + " % interval: " + r.interval.low + "–" +
    r.interval.high + " · standard deviation " + r.std.toFixed(1);
  $("band").textContent = r.severity;
  fillBands(r);
  drawDistribution($("distribution-chart"), r);
  drawTimeline($("timeline-chart"), r);
  fillTables(r);
  fillQuality(r.quality);
  fillModel(r.model);
  $("synthetic-banner").hidden = !r.model.synthetic_demo;
  $("model-banner").hidden = !r.model.synthetic_demo;
  const blob = new Blob([JSON.stringify(r, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  current.objectUrls.push(url);
  $("download-json").href = url;
  $("faces-block").hidden = true;
  if (job.links && job.links.faces) await showFaces(job.links.faces);
  $("results").hidden = false;
  $("results").focus();
}

async function showFaces(path) {
  const r = await fetch(path, { headers: headers() });  // needs the key header: an <img src> cannot send it
  if (!r.ok) return;
  const url = URL.createObjectURL(await r.blob());
  current.objectUrls.push(url);
  $("faces-img").src = url;
  $("faces-block").hidden = false;
}

async function onDelete() {
  if (!current.jobId) return;
  const r = await fetch("/jobs/" + encodeURIComponent(current.jobId), { method: "DELETE", headers: headers() });
  if (r.status === 204) {
    $("results").hidden = true;
    $("progress-section").hidden = true;
    $("status-text").textContent = "";
    for (const u of current.objectUrls) URL.revokeObjectURL(u);
    current.objectUrls = [];
    current.jobId = null;
    clearError();
  } else {
    showError(await r.json().catch(() => ({ title: "HTTP " + r.status })));
  }
}

function bandOf(score) {
  const s = Math.round(score);
  return config.bands.find((b) => b.low <= s && s <= b.high);
}

function fillBands(r) {
  const body = $("band-table").tBodies[0];
  body.replaceChildren();
  for (const b of config.bands) {
    const p = r.band_probabilities[b.name] || 0;
    const tr = document.createElement("tr");
    if (b.name === r.severity) tr.className = "this";
    const meter = document.createElement("span");
    meter.className = "meter";
    meter.style.width = (p * 8).toFixed(2) + "rem";
    meter.setAttribute("aria-hidden", "true");
    const cell = td("");
    cell.append(meter, (p * 100).toFixed(1) + " %");
    tr.append(td(b.name), td(b.low + "–" + b.high), cell);
    body.append(tr);
  }
}

function td(text, cls) {
  const c = document.createElement("td");
  c.textContent = text;
  if (cls) c.className = cls;
  return c;
}

function fillTables(r) {
  const tl = $("timeline-table").tBodies[0];
  tl.replaceChildren(...(r.timeline || []).map((p) => {
    const tr = document.createElement("tr");
    tr.append(td(p.start_time.toFixed(2), "num"), td(p.score.toFixed(1), "num"));
    return tr;
  }));
  const dt = $("distribution-table").tBodies[0];
  dt.replaceChildren(...r.distribution.map((p, k) => {
    const tr = document.createElement("tr");
    tr.append(td(String(config.min_score + k), "num"), td(p.toFixed(4), "num"));
    return tr;
  }));
}

function fillFacts(dl, rows) {
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

function fillQuality(q) {
  const pct = q.frames_decoded ? " (" + Math.round(100 * q.frames_with_face / q.frames_decoded) + " %)" : "";
  const dropped = Object.entries(q.dropped || {}).map(([k, v]) => v + " " + k.replaceAll("_", " ")).join(", ");
  fillFacts($("quality"), [
    ["duration", q.duration_s.toFixed(1) + " s"],
    ["frame size", q.width + " × " + q.height + " px at " + q.fps.toFixed(2) + " fps"],
    ["frames with a face", q.frames_with_face + " of " + q.frames_decoded + " decoded" + pct],
    ["face clips scored", String(q.clips_used)],
    ["frames dropped", dropped || "none"],
  ]);
  const list = $("corrections");
  list.replaceChildren();
  const entries = Object.entries(q.corrections || {});
  if (!entries.length) {
    const li = document.createElement("li");
    li.textContent = "Nothing needed correcting.";
    list.append(li);
  }
  for (const [k, v] of entries) {
    const li = document.createElement("li");
    li.textContent = describeCorrection(k, v);
    list.append(li);
  }
}

function describeCorrection(key, v) {
  const j = (x) => (typeof x === "object" ? JSON.stringify(x) : String(x));
  switch (key) {
    case "frame_rate":
      return "Frame rate: resampled from " + Number(v.from).toFixed(2) + " to " + Number(v.to).toFixed(2) +
        " fps" + (v.variable ? " (the video's frame rate varied)" : "") + ", the rate the model was trained at.";
    case "orientation":
      return "Orientation: the picture was turned by " + j(v.rotated_by !== undefined ? v.rotated_by : v) +
        "°" + (v.by ? " (found by " + v.by + ")" : "") + ".";
    case "display_flip": return "Mirroring: the video's display flip was applied (" + j(v) + ").";
    case "stream": return "Video stream: " + j(v) + ".";
    case "deinterlaced": return "Interlaced video: deinterlaced.";
    case "color_range": return "Colour range: " + j(v) + ".";
    case "frames_after_decode_error": return "Damaged data: " + j(v) + " frames after a decoding error were dropped.";
    case "truncated": return "The file ends early (truncated): " + j(v) + ".";
    default: return key.replaceAll("_", " ") + ": " + j(v);
  }
}

function fillModel(m) {
  const pre = m.preprocessing;
  const preText = !pre ? "not reported" : pre.matches === true ? "made as for the model's training"
    : pre.matches === false ? "differs from the training: " + (pre.differences || []).join("; ")
    : "the model records nothing to compare";
  fillFacts($("model-card"), [
    ["name", m.name],
    ["version", m.version],
    ["trained on", m.synthetic_demo ? "SYNTHETIC videos only (demo model)" : "see the description"],
    ["description", m.description || "—"],
    ["face clips", preText],
    ["engine", m.engine ? m.engine.runtime + " on " + m.engine.device + " (network from " + m.engine.model_from + ")"
      : "TorchServe (its model_log.log names the engine)"],
    ["archive SHA-256", m.sha256],
  ]);
}

// ---------------------------------------------------------------------------------------------- SVG charts
function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.append(e);
  return e;
}

function text(parent, x, y, s, attrs) {
  const t = el("text", { x, y, "font-size": 12, fill: "#1b1b1f", ...(attrs || {}) }, parent);
  t.textContent = s;
  return t;
}

function svgFrame(container, w, h, titleText, descText) {
  container.replaceChildren();
  const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-labelledby": container.id + "-t " +
    container.id + "-d" }, container);
  el("title", { id: container.id + "-t" }, svg).textContent = titleText;
  el("desc", { id: container.id + "-d" }, svg).textContent = descText;
  return svg;
}

const BAND_FILL = { minimal: "#e3f1e6", mild: "#fdf3d0", moderate: "#fde3cf", severe: "#f8d7da" };

function drawDistribution(container, r) {
  const W = 900, H = 260, L = 52, R = 12, T = 26, B = 40;
  const n = r.distribution.length, pw = W - L - R, ph = H - T - B;
  const maxP = Math.max(...r.distribution, 1e-9);
  const yStep = niceCeil(maxP / 4);  // 4–5 gridlines at round percentages
  const yMax = Math.ceil(maxP / yStep - 1e-9) * yStep;
  const bw = pw / n;
  const x = (k) => L + k * bw;
  const y = (p) => T + ph - (p / yMax) * ph;
  const svg = svgFrame(container, W, H, "Distribution of the BDI-II score",
    `Probability of each score ${config.min_score}–${config.max_score}; expected score ${r.bdi_score.toFixed(1)}, ` +
    `${Math.round(r.interval.mass * 100)} % interval ${r.interval.low}–${r.interval.high}.`);
  for (const b of config.bands) {  // band backgrounds with their names
    el("rect", { x: x(b.low - config.min_score), y: T, width: (b.high - b.low + 1) * bw, height: ph,
                 fill: BAND_FILL[b.name] || "#eee" }, svg);
    text(svg, x(b.low - config.min_score) + 4, T - 8, b.name, { "font-size": 12 });
  }
  for (let v = 0; v <= yMax + yStep / 2; v += yStep) {  // y grid
    el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#c4c4cc", "stroke-width": 0.5 }, svg);
    text(svg, L - 6, y(v) + 4, (100 * v).toFixed(yStep < 0.01 ? 1 : 0) + " %", { "text-anchor": "end",
                                                                                  "font-size": 11 });
  }
  const bars = el("g", { class: "bars" }, svg);
  r.distribution.forEach((p, k) => {
    const s = config.min_score + k;
    const inside = s >= r.interval.low && s <= r.interval.high;
    el("rect", { x: x(k) + 0.5, y: y(p), width: Math.max(bw - 1, 1), height: Math.max(T + ph - y(p), 0),
                 fill: inside ? "#0b57d0" : "#8fa9d6", "data-score": s }, bars);
  });
  const ix0 = x(r.interval.low - config.min_score), ix1 = x(r.interval.high - config.min_score + 1);
  el("rect", { class: "interval", x: ix0, y: T + ph + 4, width: ix1 - ix0, height: 5, fill: "#1b1b1f" }, svg);
  const sx = L + (r.bdi_score - config.min_score + 0.5) * bw;
  el("line", { class: "expected", x1: sx, x2: sx, y1: T, y2: T + ph, stroke: "#b3261e", "stroke-width": 2 }, svg);
  text(svg, sx + 4, T + 12, "score " + r.bdi_score.toFixed(1), { fill: "#6e0012", "font-weight": 600 });
  for (let s = config.min_score; s <= config.max_score; s += 9) {
    text(svg, x(s - config.min_score) + bw / 2, T + ph + 22, String(s), { "text-anchor": "middle", "font-size": 11 });
  }
  text(svg, L + pw / 2, H - 4, "BDI-II score", { "text-anchor": "middle" });
}

function drawTimeline(container, r) {
  const W = 900, H = 260, L = 52, R = 12, T = 14, B = 40;
  const pw = W - L - R, ph = H - T - B;
  const pts = r.timeline || [];
  const dur = Math.max(r.quality.duration_s || 0, ...pts.map((p) => p.start_time), 1e-3);
  const x = (t) => L + (t / dur) * pw;
  const y = (s) => T + ph - ((s - config.min_score) / (config.max_score - config.min_score + 1)) * ph;
  const svg = svgFrame(container, W, H, "Score of each face clip through the video",
    `${pts.length} clips over ${dur.toFixed(1)} s; clip scores from ` +
    `${Math.min(...pts.map((p) => p.score)).toFixed(1)} to ${Math.max(...pts.map((p) => p.score)).toFixed(1)}.`);
  for (const b of config.bands) {
    el("rect", { x: L, y: y(b.high + 1), width: pw, height: y(b.low) - y(b.high + 1),
                 fill: BAND_FILL[b.name] || "#eee" }, svg);
    text(svg, W - R - 4, y(b.high + 1) + 13, b.name, { "text-anchor": "end", "font-size": 11 });
  }
  for (const s of [0, 14, 20, 29, 63]) {
    text(svg, L - 6, y(s) + 4, String(s), { "text-anchor": "end", "font-size": 11 });
  }
  const ticks = niceTicks(dur);
  for (const t of ticks) {
    el("line", { x1: x(t), x2: x(t), y1: T + ph, y2: T + ph + 4, stroke: "#1b1b1f" }, svg);
    text(svg, x(t), T + ph + 18, formatSeconds(t), { "text-anchor": "middle", "font-size": 11 });
  }
  text(svg, L + pw / 2, H - 4, "time in the video (s)", { "text-anchor": "middle" });
  el("line", { class: "overall", x1: L, x2: W - R, y1: y(r.bdi_score), y2: y(r.bdi_score), stroke: "#b3261e",
               "stroke-width": 1.5, "stroke-dasharray": "6 4" }, svg);
  if (pts.length > 1) {
    el("polyline", { points: pts.map((p) => `${x(p.start_time)},${y(p.score)}`).join(" "), fill: "none",
                     stroke: "#0b57d0", "stroke-width": 2 }, svg);
  }
  const dots = el("g", { class: "clips" }, svg);
  for (const p of pts) {
    const c = el("circle", { cx: x(p.start_time), cy: y(p.score), r: 4, fill: "#0b57d0" }, dots);
    el("title", {}, c).textContent = `${p.start_time.toFixed(2)} s: ${p.score.toFixed(1)}`;
  }
}

function niceCeil(v) {
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v) return m * e;
  return 10 * e;
}

function niceTicks(dur) {
  const step = niceCeil(dur / 6);
  const out = [];
  for (let t = 0; t <= dur + 1e-9; t += step) out.push(t);
  return out;
}

function formatSeconds(t) {
  return t >= 60 ? Math.floor(t / 60) + ":" + String(Math.round(t % 60)).padStart(2, "0") : String(+t.toFixed(1));
}

function formatBytes(n) {
  if (n >= 1024 ** 3) return (n / 1024 ** 3).toFixed(1) + " GiB";
  if (n >= 1024 ** 2) return (n / 1024 ** 2).toFixed(1) + " MiB";
  if (n >= 1024) return (n / 1024).toFixed(0) + " KiB";
  return n + " B";
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
