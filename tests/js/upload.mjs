// Upload a file with tus-js-client: node upload.mjs ENDPOINT FILE [OPTIONS_JSON]
// Prints {"url": ...} on success; the error and exit status 1 otherwise.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import * as tus from "tus-js-client";

const [endpoint, path, extra] = process.argv.slice(2);
const options = extra ? JSON.parse(extra) : {};
const data = readFileSync(path);

const upload = new tus.Upload(data, {
  endpoint,
  metadata: { name: basename(path), filetype: "application/octet-stream" },
  // Retry at once after a cut connection, as often as the test's proxy cuts.
  retryDelays: Array(20).fill(0),
  ...options,
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url }));
  },
});
upload.start();
