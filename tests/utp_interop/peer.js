'use strict'
// A libutp peer (through utp-native) for tests/utp/test_interop.py.
//   node peer.js echo-server            listen on 127.0.0.1, print {"port": N}, echo every
//                                       connection until stdin closes
//   node peer.js echo-request PORT SIZE send an x-stream /echo request with a JSON payload of
//                                       about SIZE bytes, print what came back
//   node peer.js pair SIZE              move SIZE bytes between two libutp sockets in this
//                                       process, print the seconds and CPU seconds it took
//   node peer.js sink                   listen, print {"port": N}; for every connection that
//                                       ends, print the bytes, seconds and CPU seconds of this
//                                       process from its first byte to its end; until stdin closes
//   node peer.js send PORT SIZE         send SIZE bytes to a sink, end, print the same figures
const crypto = require('crypto')
const utp = require('utp-native')

const [mode, portArg, sizeArg] = process.argv.slice(2)
if (mode !== 'sink') {
  setTimeout(() => { console.error('peer.js: timed out'); process.exit(2) }, 120000).unref()
}

function since (started, cpu) {
  const used = process.cpuUsage(cpu)
  return {
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
    cpu_seconds: (used.user + used.system) / 1e6
  }
}

if (mode === 'echo-server') {
  let received = 0
  const server = utp.createServer((socket) => {
    socket.on('data', (data) => { received += data.length })
    socket.on('error', (err) => console.error('peer.js:', err.message))
    socket.pipe(socket)
  })
  server.listen(0, '127.0.0.1', () => {
    console.log(JSON.stringify({ port: server.address().port }))
  })
  process.stdin.on('end', () => {
    console.log(JSON.stringify({ received }))
    process.exit(0)
  })
  process.stdin.resume()
} else if (mode === 'echo-request') {
  const text = crypto.randomBytes(Number(sizeArg) >> 1).toString('hex')
  const header = Buffer.from('route: /echo\ndata-format: json\nid: libutp\n')
  const payload = Buffer.from(JSON.stringify({ text }))
  const prefix = Buffer.alloc(8)
  prefix.writeUInt32BE(header.length, 0)
  prefix.writeUInt32BE(payload.length, 4)
  const socket = utp.connect(Number(portArg), '127.0.0.1')
  socket.on('error', (err) => { console.error('peer.js:', err.message); process.exit(1) })
  socket.write(Buffer.concat([prefix, header, payload]))
  let input = Buffer.alloc(0)
  socket.on('data', (data) => {
    input = Buffer.concat([input, data])
    if (input.length < 8) return
    const headerLength = input.readUInt32BE(0)
    const payloadLength = input.readUInt32BE(4)
    if (input.length < 8 + headerLength + payloadLength) return
    const headers = input.subarray(8, 8 + headerLength).toString()
    const reply = JSON.parse(input.subarray(8 + headerLength, 8 + headerLength + payloadLength))
    console.log(JSON.stringify({ headers, echoed: reply.text === text, bytes: payload.length }))
    socket.end()
  })
  socket.on('close', () => process.exit(0))
} else if (mode === 'pair') {
  const size = Number(portArg)
  const block = crypto.randomBytes(1 << 20)
  const started = process.hrtime.bigint()
  const cpu = process.cpuUsage()
  let received = 0
  const server = utp.createServer((socket) => {
    socket.on('data', (data) => { received += data.length })
    socket.on('end', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      const used = process.cpuUsage(cpu)
      const cpuSeconds = (used.user + used.system) / 1e6
      console.log(JSON.stringify({ received, seconds, cpu_seconds: cpuSeconds }))
      process.exit(0)
    })
  })
  server.listen(0, '127.0.0.1', () => {
    const socket = utp.connect(server.address().port, '127.0.0.1')
    let sent = 0
    const pump = () => {
      while (sent < size) {
        const chunk = block.subarray(0, Math.min(block.length, size - sent))
        sent += chunk.length
        if (!socket.write(chunk)) { socket.once('drain', pump); return }
      }
      socket.end()
    }
    pump()
  })
} else if (mode === 'sink') {
  const server = utp.createServer((socket) => {
    let received = 0
    let started = null
    let cpu = null
    socket.on('data', (data) => {
      if (started === null) { started = process.hrtime.bigint(); cpu = process.cpuUsage() }
      received += data.length
    })
    socket.on('error', (err) => console.error('peer.js:', err.message))
    socket.on('end', () => {
      console.log(JSON.stringify({ received, ...since(started, cpu) }))
      socket.end()
    })
  })
  server.listen(0, '127.0.0.1', () => {
    console.log(JSON.stringify({ port: server.address().port }))
  })
  process.stdin.on('end', () => process.exit(0))
  process.stdin.resume()
} else if (mode === 'send') {
  const size = Number(sizeArg)
  const block = crypto.randomBytes(1 << 20)
  const started = process.hrtime.bigint()
  const cpu = process.cpuUsage()
  const socket = utp.connect(Number(portArg), '127.0.0.1')
  socket.on('error', (err) => { console.error('peer.js:', err.message); process.exit(1) })
  let sent = 0
  const pump = () => {
    while (sent < size) {
      const chunk = block.subarray(0, Math.min(block.length, size - sent))
      sent += chunk.length
      if (!socket.write(chunk)) { socket.once('drain', pump); return }
    }
    socket.end()
  }
  socket.on('close', () => {
    console.log(JSON.stringify({ sent, ...since(started, cpu) }))
    process.exit(0)
  })
  socket.resume()
  pump()
} else {
  console.error('usage: node peer.js echo-server | echo-request PORT SIZE | pair SIZE | sink | send PORT SIZE')
  process.exit(64)
}
