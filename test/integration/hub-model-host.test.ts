// The hub's model host over real TLS: HEAD, single ranges (206/416), If-Range and ETag, deterministic
// synthetic files, and every misbehaviour switch the fault tests rely on.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { sha256Hex, startTestHub, type TestHub } from '../helpers/hub.js';

let hub: TestHub;
const teardown: (() => Promise<void> | void)[] = [];
const SIZE = 5 * 1024 * 1024 + 123;

before(async () => {
  hub = await startTestHub(
    { after: (fn) => teardown.push(fn) },
    {
      extraModels: [
        { id: 'big', size: SIZE, seed: 'fault-tests' },
        { id: 'other', size: 1000, seed: 7 },
      ],
    },
  );
});
after(async () => {
  for (const fn of teardown.reverse()) await fn();
});
beforeEach(() => hub.setMisbehaviour({}));

function model(id: string) {
  const found = hub.models.find((m) => m.id === id);
  assert.ok(found, id);
  return found;
}

/** Reads a body until it ends or fails; returns the bytes and whether it failed. */
async function drain(response: Awaited<ReturnType<TestHub['fetch']>>): Promise<{ bytes: Buffer; failed: boolean }> {
  const chunks: Buffer[] = [];
  const reader = response.body!.getReader();
  let failed = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(Buffer.from(value));
    }
  } catch {
    failed = true;
  }
  return { bytes: Buffer.concat(chunks), failed };
}

test('the model host has its own origin and certificate, signed by the same CA', () => {
  assert.notEqual(hub.modelHostUrl, hub.issuer);
  const hubCert = new X509Certificate(hub.hubCertPem);
  const hostCert = new X509Certificate(hub.modelHostCertPem);
  const ca = new X509Certificate(hub.caPem);
  assert.notEqual(hubCert.fingerprint256, hostCert.fingerprint256);
  assert.ok(hubCert.verify(ca.publicKey) && hostCert.verify(ca.publicKey));
  assert.match(hostCert.subjectAltName ?? '', /DNS:model-host\.localhost/);
  assert.doesNotMatch(hostCert.subjectAltName ?? '', /DNS:localhost(,|$)/);
});

test('HEAD gives the length, ETag and Accept-Ranges without a body', async () => {
  const response = await hub.fetch(model('big').url, { method: 'HEAD' });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-length'), String(SIZE));
  assert.equal(response.headers.get('accept-ranges'), 'bytes');
  assert.match(response.headers.get('etag') ?? '', /^"[A-Za-z0-9_-]+"$/);
  assert.equal((await response.arrayBuffer()).byteLength, 0);
});

test('GET of a synthetic file streams exactly its size and digest, deterministically', async () => {
  const first = Buffer.from(await (await hub.fetch(model('big').url)).arrayBuffer());
  assert.equal(first.length, SIZE);
  assert.equal(sha256Hex(first), model('big').sha256);
  const other = await startTestHub(
    { after: (fn) => teardown.push(fn) },
    {
      extraModels: [
        { id: 'big', size: SIZE, seed: 'fault-tests' },
        { id: 'other', size: 1000, seed: 8 },
      ],
    },
  );
  assert.equal(other.models.find((m) => m.id === 'big')!.sha256, model('big').sha256, 'same seed and size, same bytes');
  assert.notEqual(
    other.models.find((m) => m.id === 'other')!.sha256,
    model('other').sha256,
    'another seed, other bytes',
  );
});

for (const [range, start, end] of [
  ['bytes=0-99', 0, 99],
  ['bytes=1000-', 1000, SIZE - 1],
  ['bytes=-500', SIZE - 500, SIZE - 1],
  [`bytes=${SIZE - 10}-${SIZE + 1000}`, SIZE - 10, SIZE - 1],
  ['bytes=1048571-1048580', 1_048_571, 1_048_580],
] as const) {
  test(`Range ${range} gives 206 with the right Content-Range and the matching slice`, async () => {
    const full = Buffer.from(await (await hub.fetch(model('big').url)).arrayBuffer());
    const response = await hub.fetch(model('big').url, { headers: { range } });
    assert.equal(response.status, 206);
    assert.equal(response.headers.get('content-range'), `bytes ${start}-${end}/${SIZE}`);
    assert.equal(response.headers.get('content-length'), String(end - start + 1));
    assert.ok(Buffer.from(await response.arrayBuffer()).equals(full.subarray(start, end + 1)));
  });
}

test('an unsatisfiable Range gives 416 with Content-Range bytes */size', async () => {
  const response = await hub.fetch(model('big').url, { headers: { range: `bytes=${SIZE}-` } });
  assert.equal(response.status, 416);
  assert.equal(response.headers.get('content-range'), `bytes */${SIZE}`);
  await response.body?.cancel();
});

test('a multi-range or malformed Range is ignored: 200 with the whole file', async () => {
  for (const range of ['bytes=0-1,5-6', 'items=0-1', 'bytes=9-3']) {
    const response = await hub.fetch(model('other').url, { headers: { range } });
    assert.equal(response.status, 200, range);
    assert.equal((await response.arrayBuffer()).byteLength, 1000);
  }
});

test('If-Range with the current ETag resumes (206); with another ETag sends the whole file (200)', async () => {
  const etag = (await hub.fetch(model('other').url, { method: 'HEAD' })).headers.get('etag')!;
  const resumed = await hub.fetch(model('other').url, { headers: { range: 'bytes=500-', 'if-range': etag } });
  assert.equal(resumed.status, 206);
  assert.equal((await resumed.arrayBuffer()).byteLength, 500);
  const stale = await hub.fetch(model('other').url, {
    headers: { range: 'bytes=500-', 'if-range': '"something-else"' },
  });
  assert.equal(stale.status, 200);
  assert.equal((await stale.arrayBuffer()).byteLength, 1000);
});

test('unknown paths get 404 and other methods 405', async () => {
  const missing = await hub.fetch(new URL('/models/nope.bin', hub.modelHostUrl));
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const post = await hub.fetch(model('other').url, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  await post.body?.cancel();
});

test('misbehaviour cutAfterBytes drops the connection at that offset; a resume from there succeeds', async () => {
  const cut = 1_500_000;
  hub.setMisbehaviour({ cutAfterBytes: cut });
  const { bytes, failed } = await drain(await hub.fetch(model('big').url));
  assert.ok(failed, 'the body fails');
  assert.equal(bytes.length, cut);
  const rest = await hub.fetch(model('big').url, { headers: { range: `bytes=${cut}-` } });
  assert.equal(rest.status, 206);
  const tail = Buffer.from(await rest.arrayBuffer());
  assert.equal(sha256Hex(Buffer.concat([bytes, tail])), model('big').sha256);
});

test('misbehaviour flipByteAt changes exactly one byte (the digest no longer matches)', async () => {
  const clean = Buffer.from(await (await hub.fetch(model('big').url)).arrayBuffer());
  hub.setMisbehaviour({ flipByteAt: 2_000_001 });
  const dirty = Buffer.from(await (await hub.fetch(model('big').url)).arrayBuffer());
  assert.equal(dirty.length, clean.length);
  assert.notEqual(sha256Hex(dirty), model('big').sha256);
  let differences = 0;
  for (let i = 0; i < clean.length; i += 1) if (clean[i] !== dirty[i]) differences += 1;
  assert.equal(differences, 1);
  assert.equal(dirty[2_000_001], clean[2_000_001]! ^ 1);
});

test('misbehaviour stallAfterBytes sends that much and then nothing while the connection stays open', async () => {
  hub.setMisbehaviour({ stallAfterBytes: 70_000 });
  const response = await hub.fetch(model('big').url);
  assert.equal(response.status, 200);
  // Read until the stall point (bounded by 10 s), then give it 300 ms more to show nothing follows.
  const reader = response.body!.getReader();
  let received = 0;
  const deadline = Date.now() + 10_000;
  let quietUntil = Infinity;
  let pending = reader.read();
  while (Date.now() < Math.min(deadline, quietUntil)) {
    const next = await Promise.race([pending, sleep(50).then(() => null)]);
    if (next === null) continue;
    if (next.done) break;
    pending = reader.read();
    received += next.value.length;
    if (received >= 70_000 && quietUntil === Infinity) quietUntil = Date.now() + 300;
  }
  await reader.cancel().catch(() => undefined);
  assert.equal(received, 70_000);
});

test('misbehaviour contentLengthDelta > 0 announces more than it sends and drops the connection', async () => {
  hub.setMisbehaviour({ contentLengthDelta: 10 });
  const response = await hub.fetch(model('other').url);
  assert.equal(response.headers.get('content-length'), '1010');
  const { bytes, failed } = await drain(response);
  assert.ok(failed);
  assert.equal(bytes.length, 1000);
});

test('misbehaviour contentLengthDelta < 0 sends a short body that looks complete', async () => {
  hub.setMisbehaviour({ contentLengthDelta: -10 });
  const response = await hub.fetch(model('other').url);
  assert.equal(response.status, 200);
  const { bytes, failed } = await drain(response);
  assert.ok(!failed);
  assert.equal(bytes.length, 990);
});

test('misbehaviour redirectToHttp answers 302 to plain http on the same path', async () => {
  hub.setMisbehaviour({ redirectToHttp: true });
  const response = await hub.fetch(model('other').url);
  assert.equal(response.status, 302);
  const location = new URL(response.headers.get('location')!);
  assert.equal(location.protocol, 'http:');
  assert.equal(location.pathname, new URL(model('other').url).pathname);
});

test('misbehaviour ignoreRange answers 200 with the whole file', async () => {
  hub.setMisbehaviour({ ignoreRange: true });
  const response = await hub.fetch(model('other').url, { headers: { range: 'bytes=10-19' } });
  assert.equal(response.status, 200);
  assert.equal((await response.arrayBuffer()).byteLength, 1000);
});

test('misbehaviour changeEtag serves another ETag, so an If-Range resume restarts from 0', async () => {
  const etag = (await hub.fetch(model('other').url, { method: 'HEAD' })).headers.get('etag')!;
  hub.setMisbehaviour({ changeEtag: true });
  const head = await hub.fetch(model('other').url, { method: 'HEAD' });
  assert.notEqual(head.headers.get('etag'), etag);
  const response = await hub.fetch(model('other').url, { headers: { range: 'bytes=500-', 'if-range': etag } });
  assert.equal(response.status, 200);
  await response.body?.cancel();
});

test('misbehaviour onlyModel leaves other models alone', async () => {
  hub.setMisbehaviour({ flipByteAt: 0, onlyModel: 'other' });
  const demo = Buffer.from(await (await hub.fetch(model('tiny-demo').url)).arrayBuffer());
  assert.equal(sha256Hex(demo), model('tiny-demo').sha256);
  const other = Buffer.from(await (await hub.fetch(model('other').url)).arrayBuffer());
  assert.notEqual(sha256Hex(other), model('other').sha256);
});

test('a misbehaviour given at start applies from the first request', async (t) => {
  const faulty = await startTestHub(t, { misbehave: { redirectToHttp: true } });
  const response = await faulty.fetch(faulty.models[0]!.url);
  assert.equal(response.status, 302);
  await response.body?.cancel();
  await sleep(0);
});

test('the request log keeps header names and the Range value, never other header values', async () => {
  const before = hub.modelHostRequests().length;
  const response = await hub.fetch(model('other').url, { headers: { range: 'bytes=0-1', 'x-probe': 'secret-value' } });
  await response.arrayBuffer();
  const [entry] = hub.modelHostRequests().slice(before);
  assert.ok(entry);
  assert.equal(entry.range, 'bytes=0-1');
  assert.ok(entry.headerNames.includes('x-probe'));
  assert.ok(!JSON.stringify(entry).includes('secret-value'));
});
