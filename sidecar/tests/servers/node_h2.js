// Node.js's built-in http2 module, as a cleartext (h2c) server and as a client.
//
//   node node_h2.js serve PORT              answers every request 200 with its path, but
//                                           /missing 404; POST bodies are echoed
//   node node_h2.js get PORT [--after=FILE] PATH...
//                                           one session, the paths one after another (once FILE
//                                           exists, if given); prints each status
//   node node_h2.js hold PORT PATH...       one session opened now: PATH once, then, after a
//                                           line on stdin, the paths again on the same session
'use strict';
const http2 = require('node:http2');
const readline = require('node:readline');

const [mode, port, ...rest] = process.argv.slice(2);
const after = rest.find((arg) => arg.startsWith('--after='))?.slice('--after='.length);
const paths = rest.filter((arg) => !arg.startsWith('--after='));
const fs = require('node:fs');

function request(session, path, method = 'GET', body = null) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':method': method });
    let status = 0;
    req.on('response', (headers) => { status = headers[':status']; });
    req.on('data', () => {});
    req.on('end', () => resolve(status));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

async function run(session, list) {
  for (const path of list) {
    const [method, rest] = path.startsWith('POST:') ? ['POST', path.slice(5)] : ['GET', path];
    console.log(await request(session, rest, method, method === 'POST' ? 'x'.repeat(5000) : null));
  }
}

if (mode === 'serve') {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const path = headers[':path'];
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('end', () => {
      const body = headers[':method'] === 'POST' ? Buffer.concat(chunks) : Buffer.from(path);
      stream.respond({ ':status': path === '/missing' ? 404 : 200 });
      stream.end(body);
    });
  });
  server.listen(Number(port), '127.0.0.1', () => console.log('listening'));
} else {
  (async () => {
    while (after && !fs.existsSync(after)) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const session = http2.connect(`http://127.0.0.1:${port}`);
    if (mode === 'hold') {
      await run(session, paths.slice(0, 1));
      await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once('line', resolve));
    }
    await run(session, paths);
    session.close();
  })().catch((error) => { console.error(error); process.exit(1); });
}
