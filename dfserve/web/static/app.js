// dfserve page: upload (XMLHttpRequest, for upload progress), poll the job, draw the verdict and timeline.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SVGNS = "http://www.w3.org/2000/svg";
  let config = null;
  let current = null; // job id shown
  let pollTimer = null;
  const objectUrls = [];

  function token() { return localStorage.getItem("dfserve-token") || ""; }
  function authHeaders() { const t = token(); return t ? { Authorization: "Bearer " + t } : {}; }

  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ headers: authHeaders() }, opts || {}));
    if (r.status === 401) { $("token-box").hidden = false; throw apiError(401, null); }
    if (!r.ok) {
      let body = null;
      try { body = await r.json(); } catch (e) { /* not JSON */ }
      throw apiError(r.status, body, r.headers.get("Retry-After"));
    }
    return r.status === 204 ? null : r.json();
  }

  function apiError(status, body, retry) {
    const e = new Error(words(status, body && body.error, retry));
    e.status = status;
    return e;
  }

  // Errors in words a person understands.
  function words(status, err, retry) {
    const type = err && err.type, msg = (err && err.message) || "";
    if (status === 401) return "This server needs an access token: enter it above.";
    if (status === 413 || type === "UploadTooLarge")
      return "The file is too large" + (config ? ": the limit is " + mb(config.max_upload_bytes) + "." : ".");
    if (status === 415) return "This is not a video file. " + msg;
    if (status === 503 || type === "QueueFull")
      return "The server is busy (its queue is full). Try again" + (retry ? " in " + retry + " s." : " shortly.");
    if (type === "NoFaceError")
      return "No face was found in the frames looked at, so there is no verdict. " +
             "(Option \u201cFrames without a face: classify whole frame\u201d scores whole frames as the seed apps did.)";
    if (type === "VideoError") return "This file could not be read as a video: " + msg;
    if (type === "UsageError") return "Invalid option: " + msg;
    if (status === 0) return "The connection to the server was lost.";
    return (type ? type + ": " : "Error " + (status || "") + ": ") + (msg || "something went wrong");
  }

  function mb(bytes) { return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB"; }
  function showError(text) { const e = $("error"); e.textContent = text; e.hidden = !text; }
  function clearUrls() { while (objectUrls.length) URL.revokeObjectURL(objectUrls.pop()); }

  // ---------------------------------------------------------------------------------- upload
  function options() {
    const o = {};
    for (const name of ["sample", "head", "faces", "no_face"]) {
      const v = $("opt-" + name).value.trim();
      if (v) o[name] = v;
    }
    o.timeline = true;
    // evidence frames (crops + heat); the server's page_explain by default (0 through Triton)
    o.explain = Math.max(0, parseInt($("opt-explain").value, 10) || 0);
    return o;
  }

  function upload(file) {
    showError("");
    if (config && file.size > config.max_upload_bytes) { showError(words(413)); return; }
    const fd = new FormData();
    for (const [k, v] of Object.entries(options())) fd.append(k, String(v));
    fd.append("file", file, file.name);
    $("progress-box").hidden = false;
    $("upload-progress").value = 0;
    $("upload-text").textContent = "0 %";
    $("score-progress").removeAttribute("value");
    $("score-text").textContent = "waiting for the upload";
    $("result").hidden = true;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    const t = token();
    if (t) xhr.setRequestHeader("Authorization", "Bearer " + t);
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      $("upload-progress").value = ev.loaded / ev.total;
      $("upload-text").textContent = Math.round(100 * ev.loaded / ev.total) + " % of " + mb(ev.total);
    };
    xhr.onerror = () => showError(words(0));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 401) $("token-box").hidden = false;
      if (xhr.status !== 202) {
        $("score-text").textContent = "";
        $("score-progress").value = 0;
        showError(words(xhr.status, body && body.error, xhr.getResponseHeader("Retry-After")));
        return;
      }
      $("upload-progress").value = 1;
      $("upload-text").textContent = "done, " + mb(file.size);
      follow(body.id);
      loadJobs();
    };
    xhr.send(fd);
  }

  // ----------------------------------------------------------------------------------- polling
  function follow(id) {
    current = id;
    history.replaceState(null, "", "#" + id);
    if (pollTimer) clearTimeout(pollTimer);
    poll(id);
  }

  async function poll(id) {
    if (id !== current) return;
    let job;
    try { job = await api("/v1/jobs/" + encodeURIComponent(id)); }
    catch (e) { showError(e.message); return; }
    showProgress(job);
    if (job.status === "queued" || job.status === "running") {
      pollTimer = setTimeout(() => poll(id), 600);
      return;
    }
    await render(job);
    loadJobs();
  }

  function showProgress(job) {
    $("progress-box").hidden = false;
    const p = job.progress || {}, sp = $("score-progress");
    if (job.status === "queued") { sp.removeAttribute("value"); $("score-text").textContent = "queued"; return; }
    if (job.status === "running") {
      if (p.frames_expected) {
        sp.value = Math.min(1, p.frames_done / p.frames_expected);
        $("score-text").textContent = p.frames_done + " / " + p.frames_expected + " frames";
      } else { sp.removeAttribute("value"); $("score-text").textContent = "running, " + (p.frames_done || 0) + " frames"; }
      return;
    }
    sp.value = 1;
    $("score-text").textContent = job.status + (job.latency_s != null ? " in " + job.latency_s.toFixed(1) + " s" : "");
  }

  // ------------------------------------------------------------------------------------ result
  async function render(job) {
    clearUrls();
    const r = job.result || {};
    const res = $("result");
    res.hidden = false;
    const v = $("verdict");
    v.className = "verdict " + (r.label || "");
    v.textContent = r.label || "NO VERDICT";
    $("confidence").textContent = r.confidence != null ? r.confidence.toFixed(2) + " %" : "\u2014";
    $("p-fake").textContent = r.p_fake != null ? r.p_fake.toFixed(4) : "\u2014";
    $("frames-line").textContent = r.frames_decoded != null ?
      (r.frames_scored + " of " + r.frames_decoded + " frames scored, " + r.frames_with_face + " with a face") : "";
    const w = $("warning"); w.textContent = r.warning || ""; w.hidden = !r.warning;
    showError(job.error ? words(200, job.error) : "");
    let timeline = null;
    if (job.links && job.result) {
      try { timeline = await api(job.links.timeline); } catch (e) { timeline = null; }
    }
    drawTimeline(timeline, r);
    segmentsLine(r);
    evidence(r);
    thumbs(job);
    details(job);
    const blob = new Blob([JSON.stringify(Object.assign({}, job, { timeline: timeline && timeline.timeline }), null, 1)],
                          { type: "application/json" });
    const url = URL.createObjectURL(blob); objectUrls.push(url);
    $("download").href = url;
    $("download").download = (job.filename || "result").replace(/\.[^.]*$/, "") + ".dfserve.json";
    $("api-link").href = "/v1/jobs/" + job.id;
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVGNS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }

  function drawTimeline(tl, row) {
    const wrap = $("timeline-wrap");
    wrap.textContent = "";
    if (!tl || !tl.timeline || !tl.timeline.length) {
      const p = document.createElement("p"); p.className = "muted"; p.textContent = "no timeline for this job";
      wrap.appendChild(p); return;
    }
    const pts = tl.timeline, W = 640, H = 220, L = 44, R = 10, T = 12, B = 34;
    const maxI = Math.max(1, pts[pts.length - 1][0]);
    const x = (i) => L + (W - L - R) * (pts.length === 1 ? 0.5 : i / maxI);
    const y = (p) => T + (H - T - B) * (1 - p);
    const svg = el("svg", { id: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img",
                            "aria-label": "per-frame probability of fake" });
    svg.appendChild(el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#e0e3e8" }));
    for (const [p, label] of [[1, "1 FAKE"], [0.5, "0.5"], [0, "0 REAL"]]) {
      svg.appendChild(el("text", { x: L - 4, y: y(p) + 4, "text-anchor": "end" }, label.split(" ")[0]));
    }
    // segments: shaded frame ranges whose smoothed p(fake) stays above the threshold
    const half = pts.length > 1 ? (x(maxI) - x(0)) / maxI / 2 : 3;
    for (const g of (row && row.segments) || []) {
      const x0 = Math.max(L, x(g.first_frame) - half), x1 = Math.min(W - R, x(g.last_frame) + half);
      svg.appendChild(el("rect", { class: "seg", x: x0, y: T, width: Math.max(2, x1 - x0), height: H - T - B,
                                   "data-first": g.first_frame, "data-last": g.last_frame }))
        .appendChild(el("title", {}, "suspicious segment: " + segText(g)));
    }
    svg.appendChild(el("line", { class: "thr", x1: L, x2: W - R, y1: y(0.5), y2: y(0.5) }));
    svg.appendChild(el("text", { x: L + 4, y: T + 11 }, "FAKE"));
    svg.appendChild(el("text", { x: L + 4, y: H - B - 4 }, "REAL"));
    const fps = tl.fps || row.fps;
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const i = Math.round(maxI * f);
      svg.appendChild(el("text", { x: x(i), y: H - B + 14, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" },
                         fps ? (i / fps).toFixed(1) + " s" : String(i)));
    }
    svg.appendChild(el("text", { x: (W + L) / 2, y: H - 4, "text-anchor": "middle" },
                       "frame " + pts[0][0] + " \u2013 " + pts[pts.length - 1][0] + "  (grey ticks: no face)"));
    // one line per face track (--faces all: entries are [index, p_fake, box, track]); a single line otherwise
    const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989"];
    const lines = new Map();
    let nScored = 0;
    const dots = pts.length <= 120;
    const noface = new Set();
    for (const e of pts) {
      const [i, p] = e, track = e.length > 3 ? e[3] : null;
      if (p == null) { if (track == null) noface.add(i); continue; }
      nScored++;
      if (!lines.has(track)) lines.set(track, []);
      lines.get(track).push([i, p]);
    }
    for (const i of noface) {
      svg.appendChild(el("rect", { class: "noface", x: x(i) - 1, y: H - B - 8, width: 2, height: 8 },
                         null)).appendChild(el("title", {}, "frame " + i + ": no face"));
    }
    const decided = row && row.decided_by;
    let k = 0;
    for (const [track, line] of lines) {
      const color = COLORS[k++ % COLORS.length];
      let seg = [], prev = null;
      const flush = () => {
        if (seg.length > 1) svg.appendChild(el("polyline", { class: "line", points: seg.join(" "), style: "stroke:" + color,
                                                              "data-track": track == null ? "" : String(track) }));
        seg = [];
      };
      for (const [i, p] of line) {
        if (prev != null && i - prev > 1 && track == null && [...noface].some((n) => n > prev && n < i)) flush();
        seg.push(x(i).toFixed(1) + "," + y(p).toFixed(1));
        if (dots) svg.appendChild(el("circle", { class: "pt", cx: x(i), cy: y(p), r: 2.5, style: "fill:" + color }))
          .appendChild(el("title", {}, "frame " + i + (track == null ? "" : ", person " + track) + ": p(fake) " + p.toFixed(3)));
        prev = i;
      }
      flush();
      if (track != null) {
        const f = (row.faces || []).find((t) => t.track === track);
        svg.appendChild(el("text", { x: W - R - 4, y: T + 12 * k, "text-anchor": "end", fill: color },
                           "person " + track + (f ? " p=" + f.p_fake.toFixed(2) : "") + (track === decided ? " (decides)" : "")));
      }
    }
    svg.dataset.scored = String(nScored);
    wrap.appendChild(svg);
  }

  function segText(g) {
    const span = g.start_s != null ? g.start_s.toFixed(2) + "\u2013" + g.end_s.toFixed(2) + " s" :
      "frames " + g.first_frame + "\u2013" + g.last_frame;
    return span + " (" + g.frames + (g.frames === 1 ? " frame" : " frames") + ", mean p(fake) " + g.mean_p_fake.toFixed(2) + ")";
  }

  function segmentsLine(row) {
    const p = $("segments");
    const segs = row.segments;
    if (segs == null) { p.textContent = ""; p.hidden = true; return; }
    p.hidden = false;
    p.textContent = segs.length ? "Suspicious segments (shaded): " + segs.map(segText).join("; ") :
      "No segment where the smoothed p(fake) stays above the threshold.";
  }

  // evidence: the most suspicious frames' face crops, with the occlusion heat drawn over each on a canvas
  function evidence(row) {
    const box = $("evidence"), sec = $("evidence-box");
    box.textContent = "";
    const list = row.evidence;
    sec.hidden = list == null;
    if (list == null) return;
    if (!list.length) {
      const p = document.createElement("p"); p.className = "muted";
      p.textContent = row.evidence_note || "no evidence frames for this job"; box.appendChild(p); return;
    }
    for (const e of list) {
      const fig = document.createElement("figure");
      fig.className = "ev";
      const wrap = document.createElement("div"); wrap.className = "ev-wrap";
      const img = document.createElement("img");
      img.alt = "face at frame " + e.frame;
      img.src = "data:image/png;base64," + e.png_base64;
      wrap.appendChild(img);
      if (e.heat && e.heat.length) wrap.appendChild(heatCanvas(e.heat, e.frame));
      const cap = document.createElement("figcaption");
      cap.textContent = "#" + e.frame + (e.time_s != null ? " \u00b7 " + e.time_s.toFixed(2) + " s" : "") +
        " \u00b7 p " + e.p_fake.toFixed(2);
      fig.append(wrap, cap);
      box.appendChild(fig);
    }
  }

  // heat[r][c]: how much greying that cell lowers the frame's FAKE margin; positive (toward FAKE) in red,
  // negative (toward REAL) in faint blue, alpha scaled by the largest |value| of that frame
  function heatCanvas(heat, frame) {
    const rows = heat.length, cols = heat[0].length;
    const c = document.createElement("canvas");
    c.className = "heat"; c.width = cols; c.height = rows;
    c.setAttribute("aria-label", "heat over the face at frame " + frame);
    const ctx = c.getContext("2d"), im = ctx.createImageData(cols, rows);
    let m = 0;
    for (const r of heat) for (const v of r) m = Math.max(m, Math.abs(v));
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      const v = m > 0 ? heat[i][j] / m : 0, k = 4 * (i * cols + j);
      if (v > 0) { im.data[k] = 230; im.data[k + 1] = 20; im.data[k + 2] = 20; im.data[k + 3] = Math.round(200 * v); }
      else { im.data[k] = 30; im.data[k + 1] = 90; im.data[k + 2] = 230; im.data[k + 3] = Math.round(-110 * v); }
    }
    ctx.putImageData(im, 0, 0);
    return c;
  }

  async function thumbs(job) {
    const box = $("thumbs");
    box.textContent = "";
    const list = job.thumbnails || [];
    if (!list.length) { box.innerHTML = '<p class="muted">no face thumbnails</p>'; return; }
    for (const t of list) {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = "face at frame " + t.index;
      const cap = document.createElement("figcaption");
      cap.textContent = "#" + t.index + " \u00b7 " + (t.p_fake != null ? t.p_fake.toFixed(2) : "\u2014");
      fig.append(img, cap);
      box.appendChild(fig);
      try {
        const r = await fetch(t.url, { headers: authHeaders() });
        if (r.ok) { const u = URL.createObjectURL(await r.blob()); objectUrls.push(u); img.src = u; }
      } catch (e) { /* a missing thumbnail is not an error worth showing */ }
    }
  }

  function details(job) {
    const t = $("details");
    t.textContent = "";
    const r = job.result || {};
    const rows = [["file", job.filename], ["size", mb(job.size_bytes)], ["status", job.status],
      ["duration", r.duration_s != null ? r.duration_s + " s at " + r.fps + " fps" : null],
      ["model", r.model], ["scored in", r.elapsed_s != null ? r.elapsed_s + " s" : null]];
    for (const [k, v] of Object.entries(job.options || {})) rows.push(["option " + k, String(v)]);
    for (const [k, v] of rows) {
      if (v == null) continue;
      const tr = t.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v;
    }
  }

  // -------------------------------------------------------------------------------- recent jobs
  async function loadJobs() {
    let data;
    try { data = await api("/v1/jobs?limit=20"); } catch (e) { return; }
    const ul = $("jobs");
    ul.textContent = "";
    for (const j of data.jobs) {
      const li = document.createElement("li");
      const name = document.createElement("span"); name.className = "name"; name.textContent = j.filename;
      const tag = document.createElement("span");
      const label = j.result && j.result.label;
      tag.className = "tag " + (label || j.status);
      tag.textContent = label ? label + " " + j.result.confidence.toFixed(0) + " %" :
        (j.status === "failed" && j.error ? j.error.type.replace(/Error$/, "") : j.status);
      li.append(name, tag);
      li.onclick = () => { showError(""); follow(j.id); };
      ul.appendChild(li);
    }
    if (!data.jobs.length) ul.innerHTML = '<li class="muted">no jobs yet</li>';
  }

  // ------------------------------------------------------------------------------------- wiring
  function wire() {
    const drop = $("drop"), input = $("file");
    input.addEventListener("change", () => { if (input.files.length) upload(input.files[0]); input.value = ""; });
    for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
    for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
    drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); });
    $("refresh").onclick = loadJobs;
    $("heat-toggle").addEventListener("change", () => $("evidence").classList.toggle("noheat", !$("heat-toggle").checked));
    $("token-save").onclick = () => { localStorage.setItem("dfserve-token", $("token").value.trim()); $("token-box").hidden = true; init(); };
  }

  async function init() {
    try {
      config = await api("/v1/config");
      $("limit").textContent = "(up to " + mb(config.max_upload_bytes) + ")";
      $("model").textContent = config.model ? "model " + config.model : "";
      $("untrained").hidden = !(config.model && config.model.startsWith("UNTRAINED"));
      const d = config.defaults || {};
      for (const k of ["sample", "head", "faces", "no_face"]) if (d[k] != null && $("opt-" + k)) $("opt-" + k).value = d[k];
      $("opt-explain").value = String(config.page_explain || 0);
    } catch (e) { if (e.status !== 401) showError(e.message); }
    loadJobs();
    const id = location.hash.slice(1);
    if (id) follow(id);
  }

  wire();
  init();
})();
