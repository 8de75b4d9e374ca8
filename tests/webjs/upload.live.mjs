// upload() against a real server over Node's WebSocket; run by tests/webjs/test_node.py,
// which starts the server and passes XSTREAM_WS_URL (and grants 1 MiB windows, so every
// upload here also follows partial grants). Not picked up by a bare `node --test`.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { XStreamError, resumeSlot, upload } from "../../xstream_server/web/static/xstream.js";

const server = process.env.XSTREAM_WS_URL;
const out = process.env.XSTREAM_OUT;
const MiB = 1024 * 1024;

function memoryStorage() {
  const map = new Map();
  return {
    get length() { return map.size; },
    key: (i) => [...map.keys()][i] ?? null,
    getItem: (k) => map.get(k) ?? null,
    setItem: (k, v) => map.set(k, String(v)),
    removeItem: (k) => map.delete(k),
    map,
  };
}

function makeFile(name, size) {
  const data = randomBytes(size);
  return { file: new File([data], name, { lastModified: 1700000000000 }), digest: createHash("sha256").update(data).digest("hex") };
}

function record(name, result) {
  writeFileSync(join(out, `${name}.key`), `${result.key} ${result.sha256}\n`);
}

/** A WebSocket that dies after `limit` bytes were sent on it (the first one only). */
function flakySocket(limit) {
  let first = true;
  return class extends WebSocket {
    constructor(url) {
      super(url);
      this.flaky = first;
      first = false;
      this.sentBytes = 0;
    }
    send(data) {
      if (this.flaky && this.sentBytes >= limit) {
        this.flaky = false;
        this.close();
        return;
      }
      this.sentBytes += data.byteLength ?? data.length;
      super.send(data);
    }
  };
}

test("a file is uploaded, verified and forgotten", async () => {
  const { file, digest } = makeFile("plain.bin", 3 * MiB + 5);
  const storage = memoryStorage();
  const states = new Set();
  const result = await upload(file, { server, storage, onProgress: (p) => states.add(p.state) });
  assert.equal(result.sha256, digest);
  assert.equal(result.verified, true);
  assert.equal(result.size, file.size);
  assert.equal(result.result.name, "plain.bin");
  assert.equal(result.resumedFrom, null);
  assert.equal(storage.length, 0);
  assert.ok(states.has("uploading") && states.has("done"));
  record("plain", result);
});

test("a dropped connection resumes from the durable offset by itself", async () => {
  const { file, digest } = makeFile("dropped.bin", 4 * MiB);
  const seen = [];
  const result = await upload(file, {
    server,
    storage: memoryStorage(),
    WebSocketImpl: flakySocket(MiB + MiB / 2),
    onProgress: (p) => seen.push(p),
  });
  assert.equal(result.sha256, digest);
  assert.ok(seen.some((p) => p.state === "reconnecting"));
  const resumed = seen.find((p) => p.state === "uploading" && p.attempt > 0);
  assert.ok(resumed && resumed.durable >= MiB, JSON.stringify(resumed));
  record("dropped", result);
});

test("an aborted upload resumes later from the remembered key", async () => {
  const { file, digest } = makeFile("paused.bin", 4 * MiB);
  const storage = memoryStorage();
  const controller = new AbortController();
  const first = upload(file, {
    server,
    storage,
    signal: controller.signal,
    onProgress: (p) => { if (p.durable >= 2 * MiB) controller.abort(); },
  });
  await assert.rejects(first, (e) => e.name === "AbortError");
  assert.equal(storage.length, 1);
  const result = await upload(file, { server, storage });
  assert.ok(result.resumedFrom >= 2 * MiB, String(result.resumedFrom));
  assert.equal(result.sha256, digest);
  assert.equal(result.verified, true);
  assert.equal(storage.length, 0);
  record("paused", result);
});

test("a remembered key the server no longer knows starts a new upload", async () => {
  const { file, digest } = makeFile("expired.bin", MiB);
  const storage = memoryStorage();
  storage.setItem(resumeSlot(server, "/upload-file", file), JSON.stringify({ key: "gone", offset: 10 }));
  const result = await upload(file, { server, storage });
  assert.notEqual(result.key, "gone");
  assert.equal(result.sha256, digest);
  record("expired", result);
});

test("refusals reject with the server's status", async () => {
  const { file } = makeFile("nowhere.bin", 10);
  await assert.rejects(
    upload(file, { server, route: "/no-such-route", storage: memoryStorage() }),
    (e) => e instanceof XStreamError && e.status === 404 && !e.retryable,
  );
  await assert.rejects(
    upload(file, { server, route: "/echo", storage: memoryStorage() }),
    (e) => e instanceof XStreamError && e.status === 405,
  );
});
