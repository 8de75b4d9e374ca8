// Hashes what upload() has sent, beside it, off the page's main thread (see xstream.js,
// WorkerHasher). Messages in: Uint8Array slices in file order, then "hex". Out: "ready",
// {done: bytes hashed} after each slice, {hex} at the end.
import { Sha256 } from "./xstream.js";

const hasher = new Sha256();
self.onmessage = (event) => {
  if (event.data === "hex") {
    self.postMessage({ hex: hasher.hex() });
    return;
  }
  hasher.update(event.data);
  self.postMessage({ done: hasher.length });
};
self.postMessage("ready");
