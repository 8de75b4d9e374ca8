// Unit tests of the browser client's protocol code (xstream_server/web/static/xstream.js),
// run with `node --test tests/webjs/` (Node 20+); tests/webjs/test_node.py runs them in pytest.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";

import {
  PacketDecoder,
  Sha256,
  XStreamError,
  encodePacket,
  parseHeaderBlock,
  parseStreamHeader,
  pendingUploads,
  resumeSlot,
  sha256Hex,
  socketUrl,
} from "../../xstream_server/web/static/xstream.js";

const bytes = (text) => new TextEncoder().encode(text);

test("a packet is the 8-byte prefix, the header block, the payload", () => {
  const packet = encodePacket({ route: "/echo", "data-format": "json" }, bytes("[1]"));
  const block = "route: /echo\ndata-format: json";
  const expected = Buffer.concat([
    Buffer.from([0, 0, 0, block.length, 0, 0, 0, 3]),
    Buffer.from(block),
    Buffer.from("[1]"),
  ]);
  assert.deepEqual(Buffer.from(packet), expected);
});

test("numbers are sent as decimal text and an empty payload is allowed", () => {
  const packet = encodePacket({ route: "/upload-file", "x-stream": "10:65536", size: 7 });
  const decoder = new PacketDecoder();
  decoder.push(packet);
  const { headers, payload } = decoder.next();
  assert.deepEqual(headers, { route: "/upload-file", "x-stream": "10:65536", size: "7" });
  assert.equal(payload.length, 0);
});

test("headers that cannot be sent are refused before anything goes out", () => {
  assert.throws(() => encodePacket({ Route: "/x" }), TypeError);
  assert.throws(() => encodePacket({ name: "a\nb" }), TypeError);
  assert.throws(() => encodePacket({ name: " padded" }), TypeError);
  assert.throws(() => encodePacket({ ["x".repeat(65)]: "1" }), TypeError);
});

test("non-ASCII values travel as UTF-8", () => {
  const decoder = new PacketDecoder();
  decoder.push(encodePacket({ route: "/r", name: "Übergröße – 日本.txt" }));
  assert.equal(decoder.next().headers.name, "Übergröße – 日本.txt");
});

test("the decoder takes bytes cut anywhere and several packets in one push", () => {
  const packets = [];
  for (let i = 0; i < 5; i++) packets.push(encodePacket({ status: 0, id: i }, randomBytes(i * 100)));
  const all = Buffer.concat(packets);
  for (const cut of [1, 3, 7, 8, 9, 64, all.length]) {
    const decoder = new PacketDecoder();
    const got = [];
    for (let at = 0; at < all.length; at += cut) {
      decoder.push(all.subarray(at, at + cut));
      for (let p = decoder.next(); p; p = decoder.next()) got.push(p);
    }
    assert.equal(got.length, 5, `cut ${cut}`);
    got.forEach((p, i) => {
      assert.equal(p.headers.id, String(i));
      assert.deepEqual(Buffer.from(p.payload), Buffer.from(packets[i].subarray(packets[i].length - i * 100)));
    });
    assert.equal(decoder.buffered, 0);
  }
});

test("header blocks: CRLF, a final newline, lower-cased names, trimmed values", () => {
  assert.deepEqual(parseHeaderBlock(bytes("Status: 0\r\nMessage:  a: b \n")), { status: "0", message: "a: b" });
  assert.deepEqual(parseHeaderBlock(bytes("")), {});
});

test("broken header blocks are errors with status 400", () => {
  for (const text of ["no colon", "a: 1\na: 2", "bad name!: 1", "a: \u0001", "a: 1\n\nb: 2"]) {
    assert.throws(() => parseHeaderBlock(bytes(text)), (e) => e instanceof XStreamError && e.status === 400, text);
  }
  assert.throws(() => parseHeaderBlock(new Uint8Array([0xff, 0x3a])), (e) => e.status === 400);
});

test("a packet with an empty or oversized header block is refused", () => {
  const empty = new PacketDecoder();
  empty.push(new Uint8Array(8));
  assert.throws(() => empty.next(), (e) => e.status === 400);
  const huge = new PacketDecoder({ maxHeaderBlock: 10 });
  huge.push(encodePacket({ route: "/long-enough" }));
  assert.throws(() => huge.next(), (e) => e.status === 431);
});

test("x-stream values", () => {
  assert.deepEqual(parseStreamHeader("0:65536"), [0, 65536]);
  assert.deepEqual(parseStreamHeader("1048576:0"), [1048576, 0]);
  assert.deepEqual(parseStreamHeader("-1"), [-1, 0]);
  for (const bad of ["", "5", "a:b", "1:-2", undefined]) assert.throws(() => parseStreamHeader(bad));
});

test("sha256 matches node:crypto for every length around the block edges", () => {
  for (let n = 0; n <= 200; n++) {
    const data = randomBytes(n);
    assert.equal(sha256Hex(data), createHash("sha256").update(data).digest("hex"), `length ${n}`);
  }
  assert.equal(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});

test("sha256 fed in uneven slices equals the one-shot digest", () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const hasher = new Sha256();
  let at = 0;
  for (const size of [1, 63, 64, 65, 1000, 1 << 20]) {
    hasher.update(data.subarray(at, at + size));
    at += size;
  }
  hasher.update(data.subarray(at));
  assert.equal(hasher.length, data.length);
  assert.equal(hasher.hex(), createHash("sha256").update(data).digest("hex"));
});

test("socket URLs", () => {
  assert.equal(socketUrl(undefined, "http://example.org:7080/page?x=1"), "ws://example.org:7080/x-stream");
  assert.equal(socketUrl(undefined, "https://example.org/"), "wss://example.org/x-stream");
  assert.equal(socketUrl("127.0.0.1:7080"), "ws://127.0.0.1:7080/x-stream");
  assert.equal(socketUrl("https://up.example.org"), "wss://up.example.org/x-stream");
  assert.equal(socketUrl("ws://h:1/custom"), "ws://h:1/custom");
});

test("resume slots tell files apart by server, route, name, size and time", () => {
  const file = { name: "a.bin", size: 10, lastModified: 5 };
  const slot = resumeSlot("ws://h/x-stream", "/up", file);
  assert.notEqual(slot, resumeSlot("ws://h/x-stream", "/up", { ...file, size: 11 }));
  assert.notEqual(slot, resumeSlot("ws://h/x-stream", "/up", { ...file, lastModified: 6 }));
  assert.notEqual(slot, resumeSlot("ws://other/x-stream", "/up", file));
  assert.notEqual(slot, resumeSlot("ws://h/x-stream", "/down", file));
  const store = new Map();
  const storage = {
    get length() { return store.size; },
    key: (i) => [...store.keys()][i],
    getItem: (k) => store.get(k) ?? null,
    setItem: (k, v) => store.set(k, v),
    removeItem: (k) => store.delete(k),
  };
  storage.setItem(slot, JSON.stringify({ key: "K1", offset: 4 }));
  storage.setItem("unrelated", "1");
  assert.deepEqual(pendingUploads(storage), [
    { server: "ws://h/x-stream", route: "/up", name: "a.bin", size: 10, lastModified: 5, key: "K1", offset: 4, slot },
  ]);
});

test("errors carry their status and say whether a retry may help", () => {
  const full = new XStreamError(507);
  assert.equal(full.status, 507);
  assert.equal(full.retryable, false);
  assert.match(full.message, /out of storage/);
  assert.equal(new XStreamError(503, "shutting down").retryable, true);
  assert.equal(new XStreamError(0, "lost", { retryable: true }).retryable, true);
});
