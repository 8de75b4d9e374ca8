// xstream.js: the x-stream packet protocol over WebSocket, for browsers (and Node 20+).
//
// An ES module with no dependencies and no build step. It speaks the same bytes as the TCP
// client (docs/PROTOCOL.md): a packet is an 8-byte prefix (header-block length, payload
// length, both u32 big-endian), a UTF-8 header block of `name: value` lines, a payload.
// A stream request is answered with a window; the window's bytes follow unframed.
//
//   import { upload } from "/web/xstream.js";
//   const result = await upload(file, { route: "/upload-file", onProgress: (p) => ... });
//   result.key, result.sha256, result.verified
//
// Exports: upload, pendingUploads, forgetUpload, XStreamError, encodePacket, PacketDecoder,
// parseHeaderBlock, parseStreamHeader, Connection, Sha256, sha256Hex, socketUrl, resumeSlot.

const te = new TextEncoder();
const td = new TextDecoder("utf-8", { fatal: true });

const NAME = /^[a-z0-9-]{1,64}$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const STORE_PREFIX = "xstream-upload:";

/** Statuses worth another try on a new connection (the stream's bytes are kept). */
const RETRYABLE = new Set([408, 429, 500, 503]);

const MESSAGES = {
  400: "The server did not understand the request.",
  401: "Not signed in: a valid credential is needed to upload here.",
  403: "Not allowed to upload here.",
  404: "No such upload route on this server.",
  405: "This route does not take uploads.",
  408: "The connection timed out.",
  409: "The stored upload does not match this file.",
  410: "The upload expired on the server.",
  413: "The file is larger than this server accepts.",
  429: "Too many uploads at once.",
  460: "The stored file does not match its checksum; it was discarded.",
  500: "The server failed.",
  503: "The server is unavailable right now.",
  507: "The server is out of storage space.",
};

/** An upload or request that failed; `status` is the protocol's (HTTP-like) status number,
 *  0 for a lost connection. `retryable` says whether trying again may succeed. */
export class XStreamError extends Error {
  constructor(status, message, { key = null, retryable = RETRYABLE.has(status) } = {}) {
    super(message || MESSAGES[status] || `status ${status}`);
    this.name = "XStreamError";
    this.status = status;
    this.key = key;
    this.retryable = retryable;
  }

  /** A sentence for people, by status. */
  get explanation() {
    return MESSAGES[this.status] || this.message;
  }
}

// ---- packets --------------------------------------------------------------------------

/** Headers (an object of name → string or number) and a payload → the packet's bytes. */
export function encodePacket(headers, payload = new Uint8Array(0)) {
  const lines = [];
  for (const [name, raw] of Object.entries(headers)) {
    const value = String(raw);
    if (!NAME.test(name) || CONTROL.test(value) || value !== value.replace(/^[ \t]+|[ \t]+$/g, "")) {
      throw new TypeError(`header ${JSON.stringify(name)} cannot be sent: ${JSON.stringify(value)}`);
    }
    lines.push(`${name}: ${value}`);
  }
  const block = te.encode(lines.join("\n"));
  const body = typeof payload === "string" ? te.encode(payload) : payload;
  const packet = new Uint8Array(8 + block.length + body.length);
  const view = new DataView(packet.buffer);
  view.setUint32(0, block.length);
  view.setUint32(4, body.length);
  packet.set(block, 8);
  packet.set(body, 8 + block.length);
  return packet;
}

/** One header block's bytes → an object of lower-cased names to trimmed values. */
export function parseHeaderBlock(bytes) {
  let text;
  try {
    text = td.decode(bytes);
  } catch {
    throw new XStreamError(400, "header block is not UTF-8", { retryable: false });
  }
  text = text.replaceAll("\r\n", "\n");
  if (text.endsWith("\n")) text = text.slice(0, -1);
  const headers = {};
  if (!text) return headers;
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) throw new XStreamError(400, `header line without ':': ${line}`, { retryable: false });
    let name = line.slice(0, colon).replace(/^[ \t]+|[ \t]+$/g, "");
    if (/^[\x00-\x7f]*$/.test(name)) name = name.toLowerCase();
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!NAME.test(name)) throw new XStreamError(400, `invalid header name ${name}`, { retryable: false });
    if (CONTROL.test(value)) throw new XStreamError(400, `header ${name} has a control character`, { retryable: false });
    if (Object.hasOwn(headers, name)) throw new XStreamError(400, `header ${name} appears twice`, { retryable: false });
    headers[name] = value;
  }
  return headers;
}

/** Feed it bytes as they come (`push`); `next()` returns `{headers, payload}` or null. */
export class PacketDecoder {
  constructor({ maxHeaderBlock = 1 << 20, maxPayload = 1 << 30 } = {}) {
    this.maxHeaderBlock = maxHeaderBlock;
    this.maxPayload = maxPayload;
    this.chunks = [];
    this.size = 0;
  }

  push(bytes) {
    const chunk = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    if (chunk.length) {
      this.chunks.push(chunk);
      this.size += chunk.length;
    }
  }

  get buffered() {
    return this.size;
  }

  // The first n buffered bytes, as one array (joins chunks only when it must).
  _peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const out = new Uint8Array(n);
    let at = 0;
    for (const chunk of this.chunks) {
      const part = chunk.subarray(0, n - at);
      out.set(part, at);
      at += part.length;
      if (at === n) break;
    }
    return out;
  }

  _drop(n) {
    this.size -= n;
    while (n > 0) {
      const first = this.chunks[0];
      if (first.length <= n) {
        n -= first.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  next() {
    if (this.size < 8) return null;
    const prefix = this._peek(8);
    const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
    const headerLen = view.getUint32(0);
    const payloadLen = view.getUint32(4);
    if (headerLen === 0) throw new XStreamError(400, "empty header block", { retryable: false });
    if (headerLen > this.maxHeaderBlock) throw new XStreamError(431, `header block of ${headerLen} bytes`, { retryable: false });
    if (payloadLen > this.maxPayload) throw new XStreamError(413, `payload of ${payloadLen} bytes`, { retryable: false });
    const whole = 8 + headerLen + payloadLen;
    if (this.size < whole) return null;
    const bytes = this._peek(whole).slice(); // a copy: chunks may be reused by the caller
    this._drop(whole);
    const headers = parseHeaderBlock(bytes.subarray(8, 8 + headerLen));
    return { headers, payload: bytes.subarray(8 + headerLen) };
  }
}

/** `x-stream: A:B` → [A, B] (numbers); `-1` → [-1, 0]. */
export function parseStreamHeader(value) {
  if (value === "-1") return [-1, 0];
  const match = /^(\d+):(\d+)$/.exec(value || "");
  if (!match) throw new XStreamError(400, `bad x-stream header: ${value}`, { retryable: false });
  return [Number(match[1]), Number(match[2])];
}

// ---- sha256 ---------------------------------------------------------------------------
// WebCrypto digests only a whole buffer, so a file would have to sit in memory. This is an
// incremental sha256 (FIPS 180-4) kept here: update() with slices in order, hex() at the end.

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

export class Sha256 {
  constructor() {
    this.state = new Int32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    this.w = new Int32Array(64);
    this.tail = new Uint8Array(64); // bytes of an unfinished block
    this.tailLength = 0;
    this.length = 0; // bytes hashed so far
  }

  update(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    this.length += bytes.length;
    let at = 0;
    if (this.tailLength) {
      const take = Math.min(64 - this.tailLength, bytes.length);
      this.tail.set(bytes.subarray(0, take), this.tailLength);
      this.tailLength += take;
      at = take;
      if (this.tailLength < 64) return this;
      this._blocks(this.tail, 0, 64);
      this.tailLength = 0;
    }
    const whole = at + ((bytes.length - at) & ~63);
    if (whole > at) this._blocks(bytes, at, whole);
    if (whole < bytes.length) {
      this.tail.set(bytes.subarray(whole), 0);
      this.tailLength = bytes.length - whole;
    }
    return this;
  }

  /** Finish: the digest as 64 lower-case hex digits. The object is spent afterwards. */
  hex() {
    const bits = this.length * 8;
    const pad = new Uint8Array(this.tailLength < 56 ? 64 - this.tailLength : 128 - this.tailLength);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    view.setUint32(pad.length - 8, Math.floor(bits / 0x100000000));
    view.setUint32(pad.length - 4, bits >>> 0);
    const length = this.length;
    this.update(pad);
    this.length = length;
    let out = "";
    for (const word of this.state) out += (word >>> 0).toString(16).padStart(8, "0");
    return out;
  }

  // Compress the 64-byte blocks of bytes[start, end).
  _blocks(bytes, start, end) {
    const w = this.w;
    const s = this.state;
    let a0 = s[0], b0 = s[1], c0 = s[2], d0 = s[3], e0 = s[4], f0 = s[5], g0 = s[6], h0 = s[7];
    for (let p = start; p < end; p += 64) {
      for (let i = 0; i < 16; i++) {
        const j = p + i * 4;
        w[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
      }
      for (let i = 16; i < 64; i++) {
        const x = w[i - 15];
        const y = w[i - 2];
        const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let a = a0, b = b0, c = c0, d = d0, e = e0, f = f0, g = g0, h = h0;
      for (let i = 0; i < 64; i++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const ch = (e & f) ^ (~e & g);
        const t1 = (h + S1 + ch + K[i] + w[i]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const maj = (a & b) ^ (a & c) ^ (b & c);
        const t2 = (S0 + maj) | 0;
        h = g;
        g = f;
        f = e;
        e = (d + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      a0 = (a0 + a) | 0; b0 = (b0 + b) | 0; c0 = (c0 + c) | 0; d0 = (d0 + d) | 0;
      e0 = (e0 + e) | 0; f0 = (f0 + f) | 0; g0 = (g0 + g) | 0; h0 = (h0 + h) | 0;
    }
    s[0] = a0; s[1] = b0; s[2] = c0; s[3] = d0; s[4] = e0; s[5] = f0; s[6] = g0; s[7] = h0;
  }
}

/** The Sha256 above with an async face, run in this thread. */
class InlineHasher {
  constructor() {
    this.sha = new Sha256();
  }
  get length() {
    return this.sha.length;
  }
  async update(bytes) {
    this.sha.update(bytes);
  }
  async hex() {
    return this.sha.hex();
  }
  close() {}
}

/** The same in a module Worker (sha256-worker.js), so hashing runs beside the sending on
 *  another core. `update` hands the slice over (its buffer is transferred, not copied) and
 *  waits only while more than `limit` bytes are still unhashed, so memory stays bounded. */
class WorkerHasher {
  static async create(limit) {
    if (typeof Worker === "undefined" || typeof location === "undefined") return new InlineHasher();
    let worker;
    try {
      worker = new Worker(new URL("./sha256-worker.js", import.meta.url), { type: "module" });
    } catch {
      return new InlineHasher(); // e.g. the module was loaded from another origin
    }
    const ready = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      worker.onmessage = (event) => {
        clearTimeout(timer);
        resolve(event.data === "ready");
      };
      worker.onerror = () => {
        clearTimeout(timer);
        resolve(false);
      };
    });
    if (!ready) {
      worker.terminate();
      return new InlineHasher();
    }
    return new WorkerHasher(worker, limit);
  }

  constructor(worker, limit) {
    this.worker = worker;
    this.limit = limit;
    this.length = 0; // bytes handed over
    this.done = 0; // bytes the worker has hashed
    this.digest = null;
    this.failure = null;
    this.wake = null;
    worker.onmessage = (event) => {
      if (event.data.hex) this.digest = event.data.hex;
      else this.done = event.data.done;
      this._wake();
    };
    worker.onerror = (event) => {
      this.failure = new XStreamError(0, `sha256 worker failed: ${event.message}`, { retryable: false });
      this._wake();
    };
  }

  _wake() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async _until(condition) {
    while (!condition()) {
      if (this.failure) throw this.failure;
      await new Promise((resolve) => { this.wake = resolve; });
    }
    if (this.failure) throw this.failure;
  }

  async update(bytes) {
    this.length += bytes.length;
    this.worker.postMessage(bytes, [bytes.buffer]);
    await this._until(() => this.length - this.done <= this.limit);
  }

  async hex() {
    this.worker.postMessage("hex");
    await this._until(() => this.digest !== null);
    this.close();
    return this.digest;
  }

  close() {
    this.worker.terminate();
  }
}

/** sha256 of bytes or a string, as hex. */
export function sha256Hex(data) {
  return new Sha256().update(typeof data === "string" ? te.encode(data) : data).hex();
}

// ---- where and what -------------------------------------------------------------------

/** The WebSocket URL of a server: given a ws(s):// or http(s):// URL or host:port, or none
 *  (the page's own origin). */
export function socketUrl(server, origin = globalThis.location?.href) {
  if (!server) {
    if (!origin) throw new TypeError("no server given and no page origin to use");
    const url = new URL("/x-stream", origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }
  let text = String(server);
  if (!/^[a-z]+:\/\//i.test(text)) text = `ws://${text}`;
  const url = new URL(text);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/x-stream";
  return url.href;
}

/** The storage slot of a resumable upload: one per server, route and file identity. */
export function resumeSlot(url, route, file) {
  return STORE_PREFIX + JSON.stringify([url, route, file.name, file.size, file.lastModified ?? 0]);
}

class MemoryStorage {
  constructor() { this.map = new Map(); }
  get length() { return this.map.size; }
  key(i) { return [...this.map.keys()][i] ?? null; }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

const fallbackStorage = new MemoryStorage();

function defaultStorage() {
  try {
    if (globalThis.localStorage) return globalThis.localStorage;
  } catch {
    // Storage denied (privacy settings): resume works within this page only.
  }
  return fallbackStorage;
}

/** Uploads interrupted earlier (this page or a previous one) that can be resumed by
 *  choosing the same file again: [{server, route, name, size, lastModified, key, offset}]. */
export function pendingUploads(storage = defaultStorage()) {
  const found = [];
  for (let i = 0; i < storage.length; i++) {
    const slot = storage.key(i);
    if (!slot || !slot.startsWith(STORE_PREFIX)) continue;
    try {
      const [server, route, name, size, lastModified] = JSON.parse(slot.slice(STORE_PREFIX.length));
      const saved = JSON.parse(storage.getItem(slot));
      found.push({ server, route, name, size, lastModified, key: saved.key, offset: saved.offset ?? 0, slot });
    } catch {
      // Not ours, or damaged: leave it.
    }
  }
  return found;
}

/** Drop a remembered upload (its bytes stay on the server until they expire). */
export function forgetUpload(slot, storage = defaultStorage()) {
  storage.removeItem(slot);
}

// ---- one WebSocket --------------------------------------------------------------------

function abortError(signal) {
  return signal.reason ?? new DOMException("The upload was aborted.", "AbortError");
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A WebSocket carrying packets: `request`, `receive`, `send` (raw), `drain`, `close`. */
export class Connection {
  static open(url, { signal, WebSocketImpl = globalThis.WebSocket } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const ws = new WebSocketImpl(url);
      ws.binaryType = "arraybuffer";
      const fail = (error) => {
        signal?.removeEventListener("abort", onAbort);
        reject(error);
      };
      const onAbort = () => {
        ws.close();
        fail(abortError(signal));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      ws.onopen = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(new Connection(ws, signal));
      };
      ws.onerror = () => fail(new XStreamError(0, `cannot connect to ${url}`, { retryable: true }));
      ws.onclose = () => fail(new XStreamError(0, `cannot connect to ${url}`, { retryable: true }));
    });
  }

  constructor(ws, signal) {
    this.ws = ws;
    this.decoder = new PacketDecoder();
    this.waiter = null; // {resolve, reject} of a pending receive()
    this.failure = null;
    this.signal = signal;
    ws.onmessage = (event) => {
      if (typeof event.data === "string") return this._fail(new XStreamError(400, "text message from server"));
      this.decoder.push(new Uint8Array(event.data));
      this._wake();
    };
    const lost = (event) =>
      this._fail(new XStreamError(0, `connection lost${event?.code ? ` (${event.code})` : ""}`, { retryable: true }));
    ws.onclose = lost;
    ws.onerror = lost;
    this.onAbort = () => {
      this._fail(abortError(signal));
      ws.close();
    };
    signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  _fail(error) {
    if (!this.failure) this.failure = error;
    this._wake();
  }

  _wake() {
    const waiter = this.waiter;
    if (!waiter) return;
    this.waiter = null;
    waiter();
  }

  send(bytes) {
    if (this.failure) throw this.failure;
    this.ws.send(bytes);
  }

  /** Wait until no more than `limit` bytes are queued in the browser (backpressure). */
  async drain(limit) {
    let pause = 1;
    while (this.ws.bufferedAmount > limit) {
      if (this.failure) throw this.failure;
      await sleep(pause, this.signal);
      pause = Math.min(pause * 2, 20);
    }
    if (this.failure) throw this.failure;
  }

  /** The next packet from the server. Packets already received are handed out even after
   *  the connection closed (an error completion is followed by a close). */
  async receive() {
    for (;;) {
      const packet = this.decoder.next();
      if (packet) return packet;
      if (this.failure) throw this.failure;
      await new Promise((resolve) => { this.waiter = resolve; });
    }
  }

  async request(headers, payload) {
    this.send(encodePacket(headers, payload));
    return this.receive();
  }

  close() {
    this.signal?.removeEventListener("abort", this.onAbort);
    this.ws.onclose = this.ws.onerror = this.ws.onmessage = null;
    try {
      this.ws.close();
    } catch {
      // already closed
    }
  }
}

function statusOf(packet) {
  return Number(packet.headers.status ?? "0");
}

function packetError(packet, key) {
  const status = statusOf(packet);
  return new XStreamError(status, packet.headers.message, { key });
}

// ---- upload ---------------------------------------------------------------------------

/**
 * Upload a File or Blob (it needs `name`, `size`; `lastModified` helps resume).
 *
 * Options:
 *   route        the server's stream route ("/upload-file")
 *   server       ws(s)://, http(s):// URL or host:port (default: this page's origin)
 *   metadata     {name: value} headers for the route's handler (`name` defaults to file.name)
 *   authorization  sent as the `authorization` header
 *   onProgress   called with {sent, durable, total, key, state, attempt} as bytes go out;
 *                state: connecting, uploading, hashing (re-reading the part sent before a
 *                resume, for the sha256), reconnecting, verifying, done
 *   signal       an AbortSignal: aborting pauses (the key is kept; upload() again resumes)
 *   sliceSize    bytes read from the file at a time (default 1 MiB)
 *   highWater    bytes the socket may queue before we wait (default 8 MiB)
 *   maxRate      bytes per second at most (default: unlimited)
 *   verify       compute sha256 while sending and compare with the server's (default true)
 *   hashInWorker hash in a Worker beside the sending (default true; falls back in place)
 *   retries      connection attempts in a row without progress before giving up (default 10)
 *   storage      where keys are kept (default localStorage, else memory)
 *
 * Resolves {key, size, sha256, verified, result, headers, resumedFrom}; rejects with an
 * XStreamError (its `status` is the server's) or the signal's AbortError.
 */
export async function upload(file, options = {}) {
  const {
    route = "/upload-file",
    metadata = {},
    authorization,
    onProgress = () => {},
    signal,
    sliceSize = 1 << 20,
    highWater = 8 << 20,
    maxRate = 0,
    verify = true,
    retries = 10,
    storage = defaultStorage(),
    hashInWorker = true,
    WebSocketImpl = globalThis.WebSocket,
  } = options;
  const url = socketUrl(options.server);
  const slot = resumeSlot(url, route, file);
  const total = file.size;
  if (!(total >= 1)) throw new XStreamError(400, "an empty file cannot be uploaded", { retryable: false });
  const saved = (() => {
    try {
      return JSON.parse(storage.getItem(slot) || "null");
    } catch {
      return null;
    }
  })();
  let key = saved?.key ?? null;
  let durable = saved?.offset ?? 0;
  const resumedFrom = key ? durable : null;
  const hasher = verify ? await (hashInWorker ? WorkerHasher.create(highWater) : new InlineHasher()) : null;
  const remember = () => storage.setItem(slot, JSON.stringify({ key, offset: durable, at: Date.now() }));
  const report = (sent, state, attempt) => onProgress({ sent, durable, total, key, state, attempt });
  const pacer = maxRate > 0 ? { start: Date.now(), bytes: 0 } : null;

  // Bring the hash to `position` by reading the file prefix it has not seen (after a resume).
  const hashUpTo = async (position) => {
    if (hasher && position - hasher.length > sliceSize) report(hasher.length, "hashing", failures);
    while (hasher && hasher.length < position) {
      const end = Math.min(position, hasher.length + sliceSize);
      await hasher.update(new Uint8Array(await file.slice(hasher.length, end).arrayBuffer()));
      if (signal?.aborted) throw abortError(signal);
    }
  };

  let failures = 0; // connection attempts in a row without progress
  try {
    return await send();
  } finally {
    hasher?.close();
  }

  async function send() {
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      let connection = null;
      const progressBefore = durable;
      try {
        report(durable, failures ? "reconnecting" : "connecting", failures);
        connection = await Connection.open(url, { signal, WebSocketImpl });
        for (;;) {
          const headers = { route, "x-stream": `${total}:${sliceSize}`, name: file.name, ...metadata };
          if (authorization) headers.authorization = authorization;
          if (key) headers["x-stream-key"] = key;
          const accept = await connection.request(headers);
          const status = statusOf(accept);
          if (status !== 0) {
            if (key && (status === 410 || status === 409)) {
              // Expired or no longer matching: start over as a new upload.
              storage.removeItem(slot);
              key = null;
              durable = 0;
              continue;
            }
            throw packetError(accept, key);
          }
          key = accept.headers["x-stream-key"];
          const offset = Number(accept.headers["x-stream-offset"] ?? "0");
          const [granted, buffer] = parseStreamHeader(accept.headers["x-stream"]);
          durable = offset;
          remember();
          const window = granted === 0 ? total - offset : granted;
          const piece = Math.max(1, Math.min(sliceSize, buffer || sliceSize));
          report(offset, "uploading", failures);
          let position = offset;
          const end = offset + window;
          while (position < end) {
            const stop = Math.min(end, position + piece);
            const bytes = new Uint8Array(await file.slice(position, stop).arrayBuffer());
            if (bytes.length !== stop - position) throw new XStreamError(0, "the file changed while being read", { retryable: false });
            if (hasher) await hashUpTo(position);
            await connection.drain(highWater);
            connection.send(bytes); // copies the bytes: they may go to the hasher now
            if (hasher && hasher.length === position) await hasher.update(bytes);
            position = stop; // (bytes may be detached now: it went to the worker)
            if (pacer) {
              pacer.bytes += piece;
              const due = pacer.start + (pacer.bytes / maxRate) * 1000 - Date.now();
              if (due > 0) await sleep(due, signal);
            }
            report(position - connection.ws.bufferedAmount, "uploading", failures);
          }
          const done = await connection.receive();
          const [missing] = parseStreamHeader(done.headers["x-stream"] ?? "-1");
          if (statusOf(done) !== 0) {
            if (missing >= 0) durable = total - missing;
            remember();
            if (statusOf(done) === 460) storage.removeItem(slot);
            throw packetError(done, key);
          }
          durable = total - missing;
          remember();
          failures = 0;
          if (missing > 0) continue; // a partial grant: ask for the next window
          storage.removeItem(slot);
          report(total, "verifying", 0);
          const claimed = (done.headers["x-stream-checksum"] || "").replace(/^sha256:/, "");
          let sha256 = claimed || null;
          let verified = false;
          if (hasher) {
            await hashUpTo(total);
            const ours = await hasher.hex();
            if (claimed && claimed !== ours) {
              throw new XStreamError(460, `the server stored a different file (sha256 ${claimed}, the file's is ${ours})`, { key, retryable: false });
            }
            sha256 = ours;
            verified = Boolean(claimed);
          }
          let result = null;
          if (done.payload.length) {
            const text = new TextDecoder().decode(done.payload);
            try {
              result = done.headers["data-format"] === "json" ? JSON.parse(text) : text;
            } catch {
              result = text;
            }
          }
          report(total, "done", 0);
          connection.close();
          return { key, size: total, sha256, verified, result, headers: done.headers, resumedFrom };
        }
      } catch (error) {
        connection?.close();
        if (signal?.aborted) {
          if (key) remember();
          throw abortError(signal);
        }
        if (!(error instanceof XStreamError) || !error.retryable) {
          if (error instanceof XStreamError && error.key === null) error.key = key;
          throw error;
        }
        failures = durable > progressBefore ? 1 : failures + 1;
        if (failures > retries) throw error;
        report(durable, "reconnecting", failures);
        await sleep(Math.min(250 * 2 ** (failures - 1), 5000), signal);
      }
    }
  }
}
