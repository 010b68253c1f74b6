// Node.js over TLS (its OpenSSL is linked into the node binary, which exports the SSL_*
// symbols): one server speaking HTTP/2 and HTTP/1.1 by ALPN, and clients of both.
//
//   node node_tls.js serve PORT CERT KEY     http2.createSecureServer with allowHTTP1: every
//                                            request 200 with its path, but /missing 404
//   node node_tls.js get PORT FILE PATH...   once FILE exists: the paths over one HTTP/2
//                                            session, then over one keep-alive https agent
//                                            connection; prints each status
'use strict';
const fs = require('node:fs');
const http2 = require('node:http2');
const https = require('node:https');

const [mode, port, ...rest] = process.argv.slice(2);

function answer(path) {
  return path === '/missing' ? 404 : 200;
}

function h2Get(session, path) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path });
    let status = 0;
    req.on('response', (headers) => { status = headers[':status']; });
    req.on('data', () => {});
    req.on('end', () => resolve(status));
    req.on('error', reject);
    req.end();
  });
}

function h1Get(agent, path) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path, agent, rejectUnauthorized: false }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
  });
}

async function waitFor(file) {
  while (!fs.existsSync(file)) await new Promise((r) => setTimeout(r, 20));
}

async function get(file, paths) {
  await waitFor(file);
  const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
  for (const path of paths) console.log(await h2Get(session, path));
  session.close();
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  for (const path of paths) console.log(await h1Get(agent, path));
  agent.destroy();
}

if (mode === 'serve') {
  const [cert, key] = rest;
  const server = http2.createSecureServer({
    cert: fs.readFileSync(cert),
    key: fs.readFileSync(key),
    allowHTTP1: true,
  });
  server.on('request', (req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      res.writeHead(answer(req.url), { 'content-type': 'text/plain' });
      res.end(req.url);
    });
  });
  server.listen(Number(port), '127.0.0.1');
} else if (mode === 'get') {
  const [file, ...paths] = rest;
  get(file, paths).catch((e) => { console.error(e); process.exit(1); });
} else {
  console.error('usage: node_tls.js serve PORT CERT KEY | get PORT FILE PATH...');
  process.exit(2);
}
