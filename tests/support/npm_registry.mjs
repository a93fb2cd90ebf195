#!/usr/bin/env node
// A small npm registry for tests and `berth bench setup`: it serves packuments and tarballs
// over the registry's real HTTP protocol (GET /<name>, GET /<name>/-/<file>.tgz), on
// 127.0.0.1 with a port the kernel picks.
//
//   node npm_registry.mjs --packages SPEC.json --ports-file FILE --log FILE
//
// SPEC.json: [{"name", "version", "dependencies": {...}, "files": {"index.js": "..."}}]. Each
// package is packed here in npm's own format (a gzipped tar with a `package/` prefix) with
// its sha512 integrity and sha1 shasum. Once listening, the chosen port is written to the
// ports file; every request is appended to the log as "<METHOD> <path> <status>", so a test
// can count the tarballs it served.
import { createHash } from 'node:crypto';
import { appendFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { gzipSync } from 'node:zlib';

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`npm_registry: ${name} is required`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

// One ustar entry: a 512-byte header, then the content padded to 512 bytes.
function tarEntry(path, content) {
  const body = Buffer.from(content);
  const h = Buffer.alloc(512);
  h.write(path, 0, 100);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([h, body, pad]);
}

function pack(pkg) {
  const manifest = {
    name: pkg.name,
    version: pkg.version,
    main: 'index.js',
    dependencies: pkg.dependencies || {},
  };
  if (pkg.bin) manifest.bin = pkg.bin;
  const files = { 'package.json': JSON.stringify(manifest, null, 2) + '\n', ...(pkg.files || {}) };
  const parts = Object.keys(files).sort().map((f) => tarEntry('package/' + f, files[f]));
  parts.push(Buffer.alloc(1024));
  // A fixed mtime in the gzip header: the same spec packs to the same bytes.
  return { manifest, tgz: gzipSync(Buffer.concat(parts), { level: 6 }) };
}

const spec = JSON.parse(readFileSync(arg('--packages'), 'utf8'));
const portsFile = arg('--ports-file');
const log = arg('--log');
const packages = new Map(); // name -> { versions: Map(version -> { manifest, tgz, file }) }
for (const p of spec) {
  const { manifest, tgz } = pack(p);
  const base = p.name.startsWith('@') ? p.name.split('/')[1] : p.name;
  const file = `${base}-${p.version}.tgz`;
  if (!packages.has(p.name)) packages.set(p.name, new Map());
  packages.get(p.name).set(p.version, { manifest, tgz, file });
}

function packument(name, origin) {
  const versions = {};
  let latest = null;
  for (const [v, e] of packages.get(name)) {
    versions[v] = {
      ...e.manifest,
      _id: `${name}@${v}`,
      dist: {
        tarball: `${origin}/${name}/-/${e.file}`,
        integrity: 'sha512-' + createHash('sha512').update(e.tgz).digest('base64'),
        shasum: createHash('sha1').update(e.tgz).digest('hex'),
      },
    };
    latest = v;
  }
  return { name, 'dist-tags': { latest }, versions };
}

const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const done = (status, type, body) => {
    appendFileSync(log, `${req.method} ${path} ${status}\n`);
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  if (req.method !== 'GET') return done(405, 'application/json', '{"error":"method not allowed"}');
  const tar = path.match(/^\/((?:@[^/]+\/)?[^/]+)\/-\/([^/]+\.tgz)$/);
  if (tar && packages.has(tar[1])) {
    for (const e of packages.get(tar[1]).values())
      if (e.file === tar[2]) return done(200, 'application/octet-stream', e.tgz);
  }
  const name = path.slice(1);
  if (!tar && packages.has(name)) {
    const origin = `http://${req.headers.host}`;
    return done(200, 'application/json', JSON.stringify(packument(name, origin)));
  }
  return done(404, 'application/json', '{"error":"not found"}');
});

server.listen(0, '127.0.0.1', () => {
  const tmp = portsFile + '.tmp';
  writeFileSync(tmp, String(server.address().port));
  renameSync(tmp, portsFile);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
