// @tus/server with its file store, as its README sets it up, for benchmarks/peers.py.
// Usage: node tus-node-server.mjs DIRECTORY PORT
import http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const [directory, port] = process.argv.slice(2)
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) })
const server = http.createServer((req, res) => tus.handle(req, res))
server.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`))
