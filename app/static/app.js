// A small client of the public API: upload a picture to /localize, /cam or /pose and draw the answer.
// Every box and point in a response is in pixels of the EXIF-oriented image (response.image.width/height);
// the canvas shows that image rescaled, so everything is drawn through one scale factor.

const $ = (id) => document.getElementById(id);
const els = {
  form: $("form"), file: $("file"), fileName: $("file-name"), drop: $("drop"), task: $("task"),
  topK: $("top-k"), threshold: $("threshold"), poseBox: $("pose-box"), apiKey: $("api-key"), run: $("run"),
  status: $("status"), result: $("result"), label: $("result-label"), picker: $("class-picker"),
  pickerLabel: $("class-picker-label"), canvas: $("canvas"), json: $("json"), models: $("models"), model: $("model"), method: $("method"),
};
const ctx = els.canvas.getContext("2d");
const KEY_STORAGE = "locsvc.apiKey";
const MIN_SIDE = 720; // small pictures are drawn larger, so the labels stay sharp
const MAX_SIDE = 1024; // canvas resolution cap (long side), in canvas pixels
const TASK_NAMES = { cam: "CAM", localize: "Localize", pose: "Pose" };

let picture = null; // {file, bitmap}: the chosen image, EXIF-oriented
let current = null; // {task, body}: the last answer
let requestSeq = 0;
let modelList = []; // GET /models: [{name, serves, cam_methods, ...}]

function setState(state, message, isError = false) {
  document.body.dataset.state = state;
  if (message !== undefined) els.status.textContent = message;
  els.status.classList.toggle("error", isError);
}

function authHeaders() {
  const key = els.apiKey.value.trim();
  return key ? { "X-API-Key": key } : {};
}

// ---- the image -------------------------------------------------------------------------------------------

async function loadBitmap(file) {
  try {
    return await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    const img = new Image(); // <img> honours EXIF orientation by default
    img.src = URL.createObjectURL(file);
    try {
      await img.decode();
      return img;
    } finally {
      URL.revokeObjectURL(img.src);
    }
  }
}

async function choose(file) {
  if (!file) return;
  setState("loading", `Reading ${file.name}…`);
  try {
    picture = { file, bitmap: await loadBitmap(file) };
  } catch {
    picture = null;
    els.run.disabled = true;
    setState("error", `${file.name} is not an image this browser can show (the server may still read it).`, true);
    return;
  }
  current = null;
  requestSeq++; // an answer still on its way belongs to the previous picture
  els.fileName.textContent = file.name;
  els.run.disabled = false;
  els.label.textContent = "";
  els.pickerLabel.hidden = true;
  els.json.textContent = "";
  els.result.hidden = false;
  const w = picture.bitmap.naturalWidth ?? picture.bitmap.width;
  const h = picture.bitmap.naturalHeight ?? picture.bitmap.height;
  drawImage(w, h);
  setState("ready", `${file.name}: ${w}×${h}. Pick a task and run.`);
}

/** Size the canvas for an image of w×h pixels, paint the picture, and return the image→canvas scale. */
function drawImage(w, h) {
  const long = Math.max(w, h);
  const s = Math.min(MAX_SIDE / long, Math.max(1, MIN_SIDE / long));
  els.canvas.width = Math.max(1, Math.round(w * s));
  els.canvas.height = Math.max(1, Math.round(h * s));
  ctx.drawImage(picture.bitmap, 0, 0, els.canvas.width, els.canvas.height);
  return els.canvas.width / w;
}

// ---- calling the API -------------------------------------------------------------------------------------

function endpoint(task) {
  const params = new URLSearchParams();
  if (els.model.value) params.set("model", els.model.value);
  if (task === "cam" || task === "localize") params.set("top_k", els.topK.value || "5");
  if (task === "cam") {
    if (els.method.value) params.set("method", els.method.value);
    params.set("threshold", els.threshold.value || "0.2");
    params.set("include_grid", "true");
  }
  if (task === "pose" && els.poseBox.value.trim()) params.set("box", els.poseBox.value.trim());
  return `${task}?${params}`;
}

/** A failed call's problem+json body (RFC 9457), or a stand-in when the body is not JSON. */
async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return { status: response.status, title: response.statusText || "Error", detail: "request failed" };
  }
}

/** "401 Unauthorized: missing or wrong X-API-Key header (X-API-Key)": status, title, detail and field. */
function problemText(status, problem) {
  const where = problem.field ? ` (${problem.field})` : "";
  return `${status} ${problem.title ?? "Error"}: ${problem.detail ?? "request failed"}${where}`;
}

async function run(event) {
  event.preventDefault();
  if (!picture) return;
  const task = els.task.value;
  const seq = ++requestSeq;
  const form = new FormData();
  form.append("image", picture.file, picture.file.name);
  setState("busy", `Running ${TASK_NAMES[task]}…`);
  els.run.disabled = true;
  const started = performance.now();
  try {
    const response = await fetch(endpoint(task), { method: "POST", body: form, headers: authHeaders() });
    if (seq !== requestSeq) return;
    if (!response.ok) {
      const problem = await readProblem(response);
      let message = problemText(response.status, problem);
      if (response.status === 404 && problem.field === "model") message += ` - this server has no ${task} model yet; try another task.`;
      if (response.status === 401) message += " - enter the API key above.";
      showProblem(problem);
      setState("error", message, true);
      return;
    }
    const body = await response.json();
    current = { task, body };
    els.json.textContent = JSON.stringify(body, null, 2);
    showResult();
    const t = body.timings;
    const ms = Math.round(performance.now() - started);
    setState("done", `${TASK_NAMES[task]} by ${body.model} in ${ms} ms (decode ${t.decode_ms.toFixed(0)}, inference ${t.inference_ms.toFixed(0)}, post ${t.postprocess_ms.toFixed(0)} ms).`);
  } catch (err) {
    if (seq === requestSeq) setState("error", `Could not reach the server: ${err.message}`, true);
  } finally {
    if (seq === requestSeq) els.run.disabled = false;
  }
}

async function listModels() {
  try {
    const response = await fetch("models", { headers: authHeaders() });
    if (!response.ok) {
      const problem = await readProblem(response);
      els.models.textContent = response.status === 401 ? "enter the API key to list the models" : problemText(response.status, problem);
      return;
    }
    const models = await response.json();
    modelList = models;
    fillModels();
    const served = new Set(models.flatMap((m) => m.serves));
    for (const option of els.task.options) {
      const missing = !served.has(`/${option.value}`);
      option.textContent = option.textContent.replace(/ \(no model loaded\)$/, "") + (missing ? " (no model loaded)" : "");
    }
    els.models.textContent = `models: ${models.map((m) => `${m.name} (${m.serves.join(", ")})`).join("; ") || "none"}`;
  } catch (err) {
    els.models.textContent = `cannot list models: ${err.message}`;
  }
}

/** The model picker: "default", then every model that serves the chosen task (e.g. an fp32 model and its int8 twin). */
function fillModels() {
  const task = els.task.value;
  const keep = els.model.value;
  const names = modelList.filter((m) => m.serves.includes(`/${task}`)).map((m) => m.name);
  els.model.replaceChildren(new Option("default", ""), ...names.map((n) => new Option(n, n)));
  els.model.value = names.includes(keep) ? keep : "";
  fillMethods();
}

/** The CAM method picker: "default" (the model's own first method), then the methods the chosen model serves;
 * with the default model, those every /cam model serves. */
function fillMethods() {
  const keep = els.method.value;
  const chosen = els.model.value
    ? modelList.filter((m) => m.name === els.model.value)
    : modelList.filter((m) => m.serves.includes("/cam"));
  const lists = chosen.map((m) => m.cam_methods ?? []);
  const methods = lists.length ? lists.reduce((a, b) => a.filter((x) => b.includes(x))) : [];
  els.method.replaceChildren(new Option("default", ""), ...methods.map((n) => new Option(n, n)));
  els.method.value = methods.includes(keep) ? keep : "";
}

// ---- drawing ---------------------------------------------------------------------------------------------

/** After a failure: the plain picture, no result, and the problem body in the JSON panel. */
function showProblem(problem) {
  current = null;
  const w = picture.bitmap.naturalWidth ?? picture.bitmap.width;
  drawImage(w, picture.bitmap.naturalHeight ?? picture.bitmap.height);
  els.label.textContent = "";
  els.pickerLabel.hidden = true;
  els.json.textContent = JSON.stringify(problem, null, 2);
}

const pct = (p) => `${(100 * p).toFixed(1)}%`;

function showResult() {
  const { task, body } = current;
  els.pickerLabel.hidden = task !== "cam";
  if (task === "cam") {
    els.picker.replaceChildren(
      ...body.classes.map((c, i) => new Option(`${i + 1}. ${c.name} - ${pct(c.probability)}`, String(i))),
    );
    els.picker.value = "0";
  }
  draw();
}

function draw() {
  const { task, body } = current;
  const s = drawImage(body.image.width, body.image.height);
  if (task === "localize") {
    const { label, box } = body;
    drawBox(box, s, `${label.name} ${pct(label.probability)}`);
    els.label.textContent = `${label.name} - ${pct(label.probability)}`;
  } else if (task === "cam") {
    const c = body.classes[Number(els.picker.value) || 0];
    if (c.grid) drawHeatmap(c.grid);
    drawBox(c.box, s, `${c.name} ${pct(c.probability)}`);
    const [px, py] = c.peak;
    dot(px * s, py * s, lineWidth() * 1.5, "#fff");
    const masks = body.masks != null ? `, ${body.masks} of ${body.masks_total} masks` : "";
    els.label.textContent = `${c.name} - ${pct(c.probability)} (${body.method ?? "cam"}${masks})`;
  } else {
    drawPose(body, s);
    els.label.textContent = `${body.joints.length} joints`;
  }
}

const lineWidth = () => Math.max(3, Math.round(els.canvas.width / 240));

/** A box in image pixels, scaled by s: white over a dark outline so it shows on any picture. */
function drawBox(box, s, text, dashed = false) {
  const lw = lineWidth();
  const [x, y, w, h] = [box.x1 * s, box.y1 * s, (box.x2 - box.x1) * s, (box.y2 - box.y1) * s];
  ctx.save();
  ctx.setLineDash(dashed ? [4 * lw, 3 * lw] : []);
  ctx.lineWidth = lw + 4;
  ctx.strokeStyle = "rgba(0,0,0,0.85)";
  ctx.strokeRect(x, y, w, h);
  ctx.lineWidth = lw;
  ctx.strokeStyle = "#fff";
  ctx.strokeRect(x, y, w, h);
  ctx.restore();
  if (text) tag(text, x, y, lw);
}

/** A label on a dark plate at the upper-left corner of a box: above it when there is room, else inside. */
function tag(text, x, y, lw) {
  const size = Math.max(12, Math.round(els.canvas.width / 45));
  ctx.save();
  ctx.font = `600 ${size}px system-ui, sans-serif`;
  const pad = Math.round(size / 4);
  const w = ctx.measureText(text).width + 2 * pad;
  const h = size + 2 * pad;
  const left = Math.min(Math.max(0, x - lw / 2), els.canvas.width - w);
  const top = y - h - lw / 2 >= 0 ? y - h - lw / 2 : y + lw;
  ctx.fillStyle = "rgba(0,0,0,0.75)";
  ctx.fillRect(left, top, w, h);
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "top";
  ctx.fillText(text, left + pad, top + pad);
  ctx.restore();
}

function dot(x, y, r, fill) {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "#000";
  ctx.stroke();
}

/** Jet colormap: 0 → dark blue, 0.5 → green, 1 → dark red; returns [r, g, b] in 0..255. */
function jet(v) {
  const ch = (k) => 255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * v - k)));
  return [ch(3), ch(2), ch(1)];
}

/** Sample positions of n_out output pixels on n_in grid cells (half-pixel centres, edges clamped). */
function bilinearAxis(nIn, nOut) {
  const lo = new Int32Array(nOut), hi = new Int32Array(nOut), frac = new Float32Array(nOut);
  for (let i = 0; i < nOut; i++) {
    const src = Math.min(nIn - 1, Math.max(0, ((i + 0.5) * nIn) / nOut - 0.5));
    lo[i] = Math.floor(src);
    hi[i] = Math.min(lo[i] + 1, nIn - 1);
    frac[i] = src - lo[i];
  }
  return { lo, hi, frac };
}

/** The raw R×C CAM upsampled bilinearly over the canvas, min-max normalized, jet-coloured, alpha-blended. */
function drawHeatmap(grid, alpha = 0.5) {
  const W = els.canvas.width, H = els.canvas.height;
  const R = grid.length, C = grid[0].length;
  const xs = bilinearAxis(C, W), ys = bilinearAxis(R, H);
  const map = new Float32Array(W * H);
  let min = Infinity, max = -Infinity;
  for (let y = 0; y < H; y++) {
    const top = grid[ys.lo[y]], bottom = grid[ys.hi[y]], fy = ys.frac[y];
    for (let x = 0; x < W; x++) {
      const a = xs.lo[x], b = xs.hi[x], fx = xs.frac[x];
      const t = top[a] + (top[b] - top[a]) * fx;
      const u = bottom[a] + (bottom[b] - bottom[a]) * fx;
      const v = t + (u - t) * fy;
      map[y * W + x] = v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  const range = max - min || 1;
  const pixels = ctx.getImageData(0, 0, W, H);
  const d = pixels.data;
  for (let i = 0; i < W * H; i++) {
    const [r, g, b] = jet((map[i] - min) / range);
    d[4 * i] = (1 - alpha) * d[4 * i] + alpha * r;
    d[4 * i + 1] = (1 - alpha) * d[4 * i + 1] + alpha * g;
    d[4 * i + 2] = (1 - alpha) * d[4 * i + 2] + alpha * b;
  }
  ctx.putImageData(pixels, 0, 0);
}

const SIDE_COLOURS = { left: "#4fc3f7", right: "#ff8a65", centre: "#ffee58" };
// "l_knee", "left knee", "knee (left)" → left; likewise right; anything else (neck, head_top) → centre.
const side = (name) => (/^l(eft)?[_\s-]|\bleft\b/i.test(name) ? "left" : /^r(ight)?[_\s-]|\bright\b/i.test(name) ? "right" : "centre");

function drawPose(body, s) {
  drawBox(body.person_box, s, "", true);
  const lw = lineWidth();
  const byIndex = new Map(body.joints.map((j) => [j.index, j]));
  ctx.save();
  ctx.lineCap = "round";
  for (const e of body.edges) {
    const a = byIndex.get(e.a), b = byIndex.get(e.b);
    if (!a || !b) continue;
    ctx.beginPath();
    ctx.moveTo(a.x * s, a.y * s);
    ctx.lineTo(b.x * s, b.y * s);
    ctx.lineWidth = lw + 2;
    ctx.strokeStyle = "rgba(0,0,0,0.7)";
    ctx.stroke();
    ctx.lineWidth = lw;
    const [sa, sb] = e.names.map(side);
    ctx.strokeStyle = SIDE_COLOURS[sa === sb ? sa : "centre"];
    ctx.stroke();
  }
  const size = Math.max(10, Math.round(els.canvas.width / 70));
  ctx.font = `${size}px system-ui, sans-serif`;
  ctx.textBaseline = "middle";
  for (const j of body.joints) {
    const hidden = j.visibility !== null && j.visibility !== undefined && j.visibility < 0.5;
    dot(j.x * s, j.y * s, lw * 1.5, hidden ? "rgba(255,255,255,0.3)" : SIDE_COLOURS[side(j.name)]);
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0,0,0,0.8)";
    ctx.strokeText(j.name, j.x * s + lw * 2.5, j.y * s);
    ctx.fillStyle = "#fff";
    ctx.fillText(j.name, j.x * s + lw * 2.5, j.y * s);
  }
  ctx.restore();
}

// ---- wiring ----------------------------------------------------------------------------------------------

function showOptions() {
  for (const el of document.querySelectorAll("[data-for]")) el.hidden = !el.dataset.for.split(" ").includes(els.task.value);
}

els.apiKey.value = localStorage.getItem(KEY_STORAGE) ?? "";
els.apiKey.addEventListener("input", () => localStorage.setItem(KEY_STORAGE, els.apiKey.value.trim()));
els.apiKey.addEventListener("change", listModels);
els.file.addEventListener("change", () => choose(els.file.files[0]));
els.task.addEventListener("change", showOptions);
els.task.addEventListener("change", fillModels);
els.model.addEventListener("change", fillMethods);
els.picker.addEventListener("change", () => current && draw());
els.form.addEventListener("submit", run);
for (const type of ["dragenter", "dragover"]) {
  els.drop.addEventListener(type, (e) => {
    e.preventDefault();
    els.drop.classList.add("over");
  });
}
els.drop.addEventListener("dragleave", () => els.drop.classList.remove("over"));
els.drop.addEventListener("drop", (e) => {
  e.preventDefault();
  els.drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});
showOptions();
listModels();
