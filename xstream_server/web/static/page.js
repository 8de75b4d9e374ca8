// The upload page: one card per file, each driven by upload() from xstream.js.
// Query parameters: ?route=/upload-file (the stream route), ?server=host:port (another
// server's WebSocket), ?rate=<bytes per second> (limit each upload), ?parallel=3.
// Each card carries its state in data-* attributes (state, sent, durable, resumed-from,
// key, sha256, status): the browser tests read them, and so can anyone embedding the page.
import { XStreamError, forgetUpload, pendingUploads, resumeSlot, socketUrl, upload } from "./xstream.js";

const params = new URLSearchParams(location.search);
const route = params.get("route") || "/upload-file";
const server = params.get("server") || undefined;
const maxRate = Number(params.get("rate") || 0);
const parallel = Math.max(1, Number(params.get("parallel") || 3));
const endpoint = socketUrl(server);

const $ = (selector, root = document) => root.querySelector(selector);
const list = $("#uploads");
const template = $("#upload-card");
const queue = [];
let running = 0;

$("#endpoint").textContent = endpoint;
$("#route").textContent = route;

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit++;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 1) return "less than a second";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function refusal(error) {
  if (!(error instanceof XStreamError)) return `Upload failed: ${error.message || error}`;
  const text = {
    401: "Not allowed: sign in first (401).",
    403: "Not allowed to upload here (403).",
    413: "This file is too large for this server (413).",
    507: "The server is out of storage space (507). Try again later or with a smaller file.",
    429: "Too many uploads at once (429). Try again shortly.",
    460: "The file arrived damaged and was discarded (460). Upload it again.",
  }[error.status];
  if (text) return text;
  if (error.status === 0) return `Could not reach the server: ${error.message}.`;
  return `${error.explanation} (${error.status}${error.message && error.message !== error.explanation ? `: ${error.message}` : ""})`;
}

class Item {
  constructor(file) {
    this.file = file;
    this.card = template.content.firstElementChild.cloneNode(true);
    this.controller = null;
    this.waiting = false;
    this.samples = [];
    this.card.querySelector(".name").textContent = file.name;
    this.card.querySelector(".name").title = file.name;
    this.card.querySelector(".size").textContent = formatBytes(file.size);
    this.card.querySelector(".pause").addEventListener("click", () => this.pause());
    this.card.querySelector(".resume").addEventListener("click", () => this.enqueue());
    this.card.querySelector(".remove").addEventListener("click", () => this.remove());
    this.card.item = this;
    this.card.dataset.name = file.name;
    list.append(this.card);
    const slot = resumeSlot(endpoint, route, file);
    this.wasPending = pendingUploads().some((p) => p.slot === slot);
    this.resumedFrom = null; // the offset the last run resumed at, if it did
    this.setState("queued", this.wasPending ? "Waiting to resume…" : "Waiting…");
  }

  setState(state, message) {
    this.card.dataset.state = state;
    if (message !== undefined) this.card.querySelector(".message").textContent = message;
  }

  show(sent, durable) {
    const total = this.file.size;
    this.card.dataset.sent = String(sent);
    this.card.dataset.durable = String(durable);
    this.card.querySelector(".fill").style.width = `${((100 * sent) / total).toFixed(2)}%`;
    const now = performance.now();
    this.samples.push([now, sent]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 3000) this.samples.shift();
    const [t0, s0] = this.samples[0];
    const rate = now - t0 > 250 ? ((sent - s0) * 1000) / (now - t0) : 0;
    const parts = [`${formatBytes(sent)} of ${formatBytes(total)}`];
    if (rate > 0) {
      parts.push(`${formatBytes(rate)}/s`);
      parts.push(`${formatDuration((total - sent) / rate)} left`);
    }
    this.card.querySelector(".stats").textContent = parts.join(" · ");
  }

  enqueue() {
    if (this.waiting || this.controller) return; // already queued or running
    this.waiting = true;
    this.setState("queued", this.wasPending ? "Waiting to resume…" : "Waiting…");
    queue.push(this);
    pump();
  }

  async run() {
    this.waiting = false;
    this.controller = new AbortController();
    this.samples = [];
    let lastPaint = 0;
    let firstWindow = true;
    const started = performance.now();
    try {
      const result = await upload(this.file, {
        route,
        server,
        maxRate,
        signal: this.controller.signal,
        onProgress: (p) => {
          if (p.key) this.card.dataset.key = p.key;
          if (p.state === "uploading" && firstWindow) {
            // The server's durable offset when this run began: > 0 means it resumed.
            firstWindow = false;
            if (p.durable > 0) {
              this.resumedFrom = p.durable;
              this.card.dataset.resumedFrom = String(p.durable);
            }
          }
          if (p.state === "connecting") this.setState("connecting", "Connecting…");
          else if (p.state === "reconnecting") {
            this.samples = [];
            this.setState("reconnecting", `Connection lost; reconnecting (attempt ${p.attempt})… ${formatBytes(p.durable)} are safe on the server.`);
          } else if (p.state === "uploading" && this.card.dataset.state !== "uploading") {
            this.setState("uploading", this.resumedFrom ? `Resumed at ${formatBytes(this.resumedFrom)}.` : "");
          } else if (p.state === "hashing") {
            this.setState("hashing", "Reading the part sent earlier to compute the sha256…");
          } else if (p.state === "verifying") this.setState("verifying", "Checking sha256…");
          const now = performance.now();
          if (now - lastPaint > 100 || p.state !== "uploading") {
            lastPaint = now;
            this.show(Math.max(0, p.sent), p.durable);
          }
        },
      });
      this.show(this.file.size, this.file.size);
      this.card.dataset.key = result.key;
      this.card.dataset.sha256 = result.sha256 || "";
      this.card.querySelector(".key").textContent = result.key;
      this.card.querySelector(".sha256").textContent = result.sha256 || "(not reported)";
      const how = result.verified ? "sha256 checked in your browser against the server's" : "sha256 as reported by the server";
      const resumed = this.resumedFrom ? ` Resumed at ${formatBytes(this.resumedFrom)}.` : "";
      const seconds = (performance.now() - started) / 1000;
      const moved = this.file.size - (this.resumedFrom || 0);
      const average = seconds > 0 ? ` · ${formatBytes(Math.round(moved / seconds))}/s` : "";
      this.card.querySelector(".stats").textContent = `${formatBytes(this.file.size)} uploaded in ${formatDuration(seconds)}${average}`;
      this.setState("done", `Done: ${how}.${resumed}`);
    } catch (error) {
      if (error?.name === "AbortError") {
        this.card.querySelector(".resume").textContent = "Resume";
        this.setState("paused", "Paused. The server keeps what it has; resume any time, even after a reload.");
      } else {
        this.card.dataset.status = String(error?.status ?? "");
        this.card.querySelector(".resume").classList.toggle("retry", Boolean(error?.retryable) || error?.status === 0);
        this.card.querySelector(".resume").textContent = "Retry";
        this.setState("error", refusal(error));
      }
    } finally {
      this.controller = null;
      showPending();
    }
  }

  pause() {
    this.controller?.abort();
  }

  remove() {
    this.pause();
    this.card.remove();
  }
}

function pump() {
  while (running < parallel && queue.length) {
    const item = queue.shift();
    running++;
    item.run().finally(() => {
      running--;
      pump();
    });
  }
}

function addFiles(files) {
  for (const file of files) {
    const slot = resumeSlot(endpoint, route, file);
    const twin = [...list.children].find(
      (card) => card.dataset.state !== "done" && resumeSlot(endpoint, route, card.item.file) === slot,
    );
    if (twin) {
      twin.item.enqueue(); // the same file again: resume that card, not a rival upload
      continue;
    }
    if (file.size === 0) {
      const item = new Item(file);
      item.setState("error", "This file is empty: nothing to upload.");
      continue;
    }
    new Item(file).enqueue();
  }
  showPending();
}

function showPending() {
  const active = new Set([...list.children].map((card) => resumeSlot(endpoint, route, card.item.file)));
  const entries = pendingUploads().filter((p) => p.server === endpoint && p.route === route && !active.has(p.slot));
  const section = $("#pending");
  const ul = $("#pending-list");
  ul.replaceChildren();
  for (const entry of entries) {
    const li = document.createElement("li");
    li.dataset.name = entry.name;
    const text = document.createElement("span");
    const percent = entry.size ? Math.floor((100 * entry.offset) / entry.size) : 0;
    text.textContent = `${entry.name} · ${formatBytes(entry.offset)} of ${formatBytes(entry.size)} stored (${percent}%)`;
    const forget = document.createElement("button");
    forget.type = "button";
    forget.textContent = "Forget";
    forget.addEventListener("click", () => {
      forgetUpload(entry.slot);
      showPending();
    });
    li.append(text, forget);
    ul.append(li);
    if (!server) refreshPending(entry, text);
  }
  section.hidden = entries.length === 0;
}

// What the server holds durably of an interrupted upload (the page only learns offsets at
// window boundaries): asked of /stream-status, when the page is served by that server.
async function refreshPending(entry, text) {
  try {
    const answer = await fetch("/stream-status", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: entry.key }),
    });
    if (answer.status === 410) {
      text.textContent = `${entry.name} · expired on the server; choosing it again starts over`;
      return;
    }
    if (!answer.ok) return;
    const status = await answer.json();
    const percent = Math.floor((100 * status.offset) / entry.size);
    text.textContent = `${entry.name} · ${formatBytes(status.offset)} of ${formatBytes(entry.size)} stored (${percent}%)`;
    text.parentElement.dataset.offset = String(status.offset);
  } catch {
    // Offline: keep what the page remembered.
  }
}

const input = $("#files");
input.addEventListener("change", () => {
  addFiles([...input.files]);
  input.value = "";
});

const drop = $("#drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  addFiles([...event.dataTransfer.files]);
});
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

showPending();
document.body.dataset.ready = "1";
