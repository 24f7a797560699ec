// The page of `zipa serve`: upload files (or a recording), follow each job, then draw its
// spectrogram with phone and word tiers on one time axis. The API is described in zipa/web/app.py.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const POLL_MS = 400;
const MAX_PX_PER_SECOND = 4000;
const MAX_TRACK_PX = 4000000; // browsers stop laying out wider elements somewhere above this
const ZOOM_STEP = 1.6;
const TICK_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
const MIN_TICK_PX = 70;

const jobsShown = []; // the jobs drawn, re-fitted when the window changes size
let audioContext = null;
let playing = null; // {source, element} of the stretch being played

function sharedAudioContext() {
  audioContext = audioContext || new AudioContext();
  if (audioContext.state === "suspended") audioContext.resume();
  return audioContext;
}

// Confidence 0 .. 1 -> light red .. yellow .. light green (as zipa.plot's shading).
function shade(confidence) {
  return `hsl(${Math.round(120 * Math.min(1, Math.max(0, confidence)))}, 65%, 80%)`;
}

function notice(text) {
  const p = $("#notice");
  p.textContent = text;
  p.hidden = !text;
}

// ------------------------------------------------------------------------------------------
// One uploaded file

class Job {
  constructor(file) {
    this.file = file;
    this.transcript = $("#transcript").value.trim();
    this.lang = this.transcript ? $("#lang").value.trim() : "";
    this.el = $("#job-template").content.firstElementChild.cloneNode(true);
    $(".name", this.el).textContent = file.name;
    $("#jobs").prepend(this.el);
    this.pxPerSecond = 0;
  }

  // Upload the file; while the server is full (503: too many files waiting, 507: too many bytes
  // held) it says when to try again (Retry-After), and the card waits for that.
  async start() {
    const form = new FormData();
    form.append("file", this.file, this.file.name);
    if (this.transcript) form.append("transcript", this.transcript);
    if (this.lang) form.append("lang", this.lang);
    let response, body;
    for (;;) {
      try {
        response = await fetch("/api/jobs", { method: "POST", body: form });
      } catch (error) {
        return this.fail(`${this.file.name}: the upload failed (${error.message}); is the server running?`);
      }
      body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
      const retry = Number(response.headers.get("Retry-After"));
      if (![503, 507].includes(response.status) || !retry) break;
      $(".status", this.el).textContent = `waiting for room on the server (trying again in ${retry} s)`;
      await sleep(1000 * retry);
    }
    if (!response.ok) {
      const message = body.error || `${response.status} ${response.statusText}`;
      return this.fail(message.startsWith(this.file.name) ? message : `${this.file.name}: ${message}`);
    }
    this.id = body.id;
    this.el.dataset.job = body.id;
    this.follow(body);
  }

  async follow(job) {
    for (;;) {
      this.showProgress(job);
      if (job.state === "done") return this.render(job);
      if (job.state === "error") return this.fail(job.error);
      await sleep(POLL_MS);
      try {
        const response = await fetch(`/api/jobs/${this.id}`);
        const body = await response.json();
        if (!response.ok) return this.fail(body.error);
        job = body;
      } catch (error) {
        return this.fail(`${this.file.name}: lost the server (${error.message})`);
      }
    }
  }

  showProgress(job) {
    this.el.dataset.state = job.state;
    const status = $(".status", this.el);
    const progress = $("progress", this.el);
    const what = job.mode === "align" ? "aligning" : "decoding";
    if (job.state === "queued") {
      status.textContent = job.position ? `queued: ${job.position} before it` : "queued";
    } else if (job.state === "running") {
      const windows = job.windows > 1 ? ` in ${job.windows} windows` : "";
      status.textContent = `${what}${windows}: ${job.seconds_done.toFixed(1)} of ${job.duration.toFixed(1)} s`;
      progress.value = job.duration ? job.seconds_done / job.duration : 0;
    }
  }

  fail(message) {
    this.el.dataset.state = "error";
    $(".status", this.el).textContent = "failed";
    $("progress", this.el).hidden = true;
    const p = $(".error", this.el);
    p.textContent = message;
    p.hidden = false;
  }

  render(job) {
    const result = job.result;
    this.duration = job.duration;
    jobsShown.push(this);
    $("progress", this.el).hidden = true;
    const done = job.mode === "align" ? "aligned to the transcript" : "transcribed";
    const count = result.phones.length;
    $(".status", this.el).textContent = `${done}: ${count} phone${count === 1 ? "" : "s"}, ${job.duration.toFixed(2)} s`;
    for (const message of job.messages) {
      const li = document.createElement("li");
      li.textContent = message;
      $(".messages", this.el).append(li);
    }
    $(".view", this.el).hidden = false;

    const spectrogram = $(".spectrogram", this.el);
    job.spectrogram.forEach((tile, k) => {
      const img = document.createElement("img");
      img.src = `/api/jobs/${this.id}/spectrogram/${k}`;
      img.alt = "";
      img.draggable = false;
      img.style.left = this.percent(tile.start - tile.hop / 2);
      img.style.width = this.percent(tile.columns * tile.hop);
      spectrogram.append(img);
    });
    this.drawTier($(".tier.phones", this.el), result.phones, "phone", true);
    this.drawTier($(".tier.words", this.el), result.words || [], "word", false);
    $(".transcript", this.el).textContent = result.text;
    const labels = { textgrid: "TextGrid", ctm: "CTM", jsonl: "JSON", tsv: "TSV" };
    const links = $(".downloads", this.el);
    for (const format of job.downloads) {  // every output format the server knows
      const link = document.createElement("a");
      link.className = "download";
      link.dataset.format = format;
      link.download = "";
      link.textContent = labels[format] || format.toUpperCase();
      link.href = `/api/jobs/${this.id}/download/${format}`;
      links.append(" ", link);
    }
    $(".player", this.el).src = URL.createObjectURL(this.file);

    const scroller = $(".scroller", this.el);
    $(".zoom-in", this.el).onclick = () => this.zoom(this.pxPerSecond * ZOOM_STEP);
    $(".zoom-out", this.el).onclick = () => this.zoom(this.pxPerSecond / ZOOM_STEP);
    $(".zoom-fit", this.el).onclick = () => this.zoom(0);
    scroller.addEventListener("wheel", (event) => {
      if (!event.ctrlKey) return;
      event.preventDefault();
      const x = event.clientX - scroller.getBoundingClientRect().left;
      this.zoom(this.pxPerSecond * (event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP), x);
    }, { passive: false });
    this.zoom(0);
  }

  percent(seconds) {
    return `${(100 * seconds) / this.duration}%`;
  }

  drawTier(tier, intervals, key, shaded) {
    for (const interval of intervals) {
      const label = interval[key];
      const span = document.createElement("span");
      span.className = "segment";
      span.textContent = label;
      span.dataset.label = label;
      span.dataset.start = interval.start;
      span.dataset.end = interval.end;
      span.dataset.confidence = interval.confidence;
      span.title = `${label}  ${interval.start.toFixed(3)}–${interval.end.toFixed(3)} s, ` +
        `confidence ${interval.confidence.toFixed(2)}`;
      span.style.left = this.percent(interval.start);
      span.style.width = this.percent(interval.end - interval.start);
      if (shaded) span.style.background = shade(interval.confidence);
      span.onclick = () => this.play(interval.start, interval.end, span);
      tier.append(span);
    }
  }

  // Pixels per second; 0 fits the whole file. `anchorX`: the pixel of the view (default its
  // middle) that keeps showing the same instant.
  zoom(pxPerSecond, anchorX) {
    const scroller = $(".scroller", this.el);
    const fit = scroller.clientWidth / this.duration;
    const most = Math.max(fit, Math.min(MAX_PX_PER_SECOND, MAX_TRACK_PX / this.duration));
    const next = Math.min(most, Math.max(fit, pxPerSecond || fit));
    const x = anchorX === undefined ? scroller.clientWidth / 2 : anchorX;
    const instant = this.pxPerSecond ? (scroller.scrollLeft + x) / this.pxPerSecond : 0;
    this.pxPerSecond = next;
    this.fitted = next === fit;
    $(".track", this.el).style.width = `${next * this.duration}px`;
    scroller.scrollLeft = instant * next - x;
    this.drawAxis();
  }

  drawAxis() {
    const axis = $(".axis", this.el);
    const step = TICK_STEPS.find((s) => s * this.pxPerSecond >= MIN_TICK_PX) || TICK_STEPS[TICK_STEPS.length - 1];
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const ticks = [];
    for (let k = 0; k * step <= this.duration + 1e-9; k++) {
      const tick = document.createElement("span");
      tick.className = "tick";
      tick.style.left = this.percent(k * step);
      tick.textContent = (k * step).toFixed(decimals);
      ticks.push(tick);
    }
    axis.replaceChildren(...ticks);
  }

  // Play [start, end) s of the file: decoded by the browser (exact to the sample), or, for a
  // format it cannot decode, through the <audio> element stopped by a timer.
  async play(start, end, element) {
    stopPlaying();
    element.classList.add("playing");
    const length = Math.max(0.02, end - start);
    try {
      this.buffer = this.buffer || this.file.arrayBuffer().then((data) => sharedAudioContext().decodeAudioData(data));
      const source = sharedAudioContext().createBufferSource();
      source.buffer = await this.buffer;
      source.connect(sharedAudioContext().destination);
      source.onended = () => element.classList.remove("playing");
      playing = { source, element };
      source.start(0, start, length);
    } catch (error) {
      const player = $(".player", this.el);
      player.currentTime = start;
      player.play().catch(() => {});
      const timer = setTimeout(() => { player.pause(); element.classList.remove("playing"); }, length * 1000);
      playing = { player, timer, element };
    }
  }
}

function stopPlaying() {
  if (!playing) return;
  if (playing.source) playing.source.stop();
  if (playing.player) { playing.player.pause(); clearTimeout(playing.timer); }
  playing.element.classList.remove("playing");
  playing = null;
}

function addFiles(files) {
  notice("");
  for (const file of files) new Job(file).start();
}

// ------------------------------------------------------------------------------------------
// Recording: the microphone's samples as a 16-bit WAV file

const recording = { context: null, stream: null, chunks: [] };

async function toggleRecording(button) {
  if (recording.context) {
    const { context, stream, chunks } = recording;
    recording.context = null;
    stream.getTracks().forEach((track) => track.stop());
    await context.close();
    button.textContent = "● Record";
    button.classList.remove("recording");
    const stamp = new Date().toTimeString().slice(0, 8).replaceAll(":", "");
    addFiles([new File([wavFile(chunks, context.sampleRate)], `recording-${stamp}.wav`, { type: "audio/wav" })]);
    return;
  }
  try {
    if (!navigator.mediaDevices) throw new Error("no microphone access on this page");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const context = new AudioContext();
    await context.audioWorklet.addModule("/static/recorder-worklet.js");
    const node = new AudioWorkletNode(context, "zipa-recorder");
    const chunks = [];
    node.port.onmessage = (event) => chunks.push(event.data);
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination); // the worklet outputs silence; this keeps it running
    Object.assign(recording, { context, stream, chunks });
    button.textContent = "■ Stop";
    button.classList.add("recording");
  } catch (error) {
    notice(`Cannot record: ${error.message}. Browsers allow the microphone on pages at localhost or ` +
      "127.0.0.1, or served over https.");
  }
}

// Mono float samples in [-1, 1] -> a RIFF WAV file of 16-bit PCM at `rate` Hz.
function wavFile(chunks, rate) {
  const count = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * count));
  const ascii = (offset, text) => [...text].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  view.setUint32(4, 36 + 2 * count, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true); // size of the fmt chunk
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // one channel
  view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, 2 * count, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const x of chunk) {
      view.setInt16(offset, Math.round(Math.max(-1, Math.min(1, x)) * 32767), true);
      offset += 2;
    }
  }
  return view.buffer;
}

// ------------------------------------------------------------------------------------------

async function showInfo() {
  try {
    const info = await (await fetch("/api/info")).json();
    $("#model").textContent = `model: ${info.model || "(unnamed)"}`;
    $("#limits").textContent = `Up to ${info.max_upload_mb} MB per file. Files longer than ${info.window} s ` +
      "are decoded in overlapping windows; files are decoded one at a time, in the order they arrive " +
      `(up to ${info.max_queue} waiting; more wait here for room).`;
  } catch (error) {
    notice(`Cannot reach the server: ${error.message}`);
  }
}

function setUp() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  // Files dropped anywhere on the page are taken (and not opened by the browser).
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  $("#record").addEventListener("click", (event) => toggleRecording(event.currentTarget));
  window.addEventListener("resize", () => {
    for (const job of jobsShown) job.zoom(job.fitted ? 0 : job.pxPerSecond);
  });
  showInfo();
}

setUp();
