// Node.js http2 peers for recording (h2c): a server answering POSTs with the body length, and a
// client posting a small and a 40 kB JSON body on one connection.
//
//     node node_peers.js serve PORT
//     node node_peers.js client PORT
const http2 = require('node:http2');
const [mode, port] = [process.argv[2], Number(process.argv[3])];
if (mode === 'serve') {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    let n = 0;
    stream.on('data', (d) => { n += d.length; });
    stream.on('end', () => {
      stream.respond({ ':status': 201, 'content-type': 'application/json', 'x-echo-path': headers[':path'] });
      stream.end(JSON.stringify({ received: n }));
    });
  });
  server.listen(port, '127.0.0.1', () => console.log('serving'));
} else {
  const client = http2.connect(`http://127.0.0.1:${port}`);
  const post = (path, body) => new Promise((resolve, reject) => {
    const req = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });
    let out = '';
    req.on('response', (h) => { out += h[':status'] + ' '; });
    req.on('data', (d) => { out += d; });
    req.on('end', () => resolve(out));
    req.on('error', reject);
    req.end(body);
  });
  (async () => {
    console.log(await post('/items', JSON.stringify({ name: 'widget', count: 3 })));
    console.log(await post('/items/bulk', JSON.stringify({ blob: 'x'.repeat(40000) })));
    client.close();
  })();
}
