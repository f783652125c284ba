// The front-door attestation core (src/core/attest.ts; P-k, issue 16 item 3): a MAC over the Host the
// client dialled and its nonce, keyed with the loopback token. The expected values are computed here with
// node:crypto, independently of the code under test, plus one fixed vector that pins the format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  ATTEST_CONTEXT,
  ATTEST_NONCE_HEADER,
  ATTEST_ROUTE,
  createAttestNonce,
  createAttestor,
  isAttestNonce,
  readAttestNonce,
  verifyAttestation,
} from '../../src/core/attest.js';
import { Secret } from '../../src/core/secret.js';

const TOKEN = 'tok_0123456789abcdefGHIJKLMNOPqrstuv-_';
const NONCE = Buffer.alloc(32, 0x5a).toString('base64url'); // 'WlpaWlpa…' (43 characters)
const HOST = '127.0.0.1:48123';

/** The MAC as the protocol defines it, computed without the code under test. */
function reference(token: string, host: string, nonce: string): string {
  return createHmac('sha256', Buffer.from(token, 'utf8'))
    .update(`companion-attest-v1\n${host}\n${nonce}`, 'utf8')
    .digest('base64url');
}

test('createAttestor() gives the HMAC-SHA256 of "companion-attest-v1\\nHOST\\nNONCE" keyed with the token (known answer)', () => {
  const attest = createAttestor(TOKEN);
  assert.equal(ATTEST_CONTEXT, 'companion-attest-v1');
  assert.equal(attest(HOST, NONCE), reference(TOKEN, HOST, NONCE));
  // A fixed vector pins the format itself (a change of context, order or encoding breaks it). Computed with
  // printf 'companion-attest-v1\n127.0.0.1:48123\n%s' NONCE | openssl dgst -sha256 -hmac TOKEN -binary | base64url.
  assert.equal(attest(HOST, NONCE), 'ufaEd02lGlz6muY7_WzIxHGoAodLC4zX1lrDwTGfvk8');
  assert.equal(createAttestor(new Secret(TOKEN))(HOST, NONCE), reference(TOKEN, HOST, NONCE));
});

test('createAttestor() lower-cases the Host before the MAC, as the guard compares it', () => {
  const attest = createAttestor(TOKEN);
  assert.equal(attest('LOCALHOST:48123', NONCE), reference(TOKEN, 'localhost:48123', NONCE));
});

test('verifyAttestation() accepts the exact MAC for the Host dialled and the nonce sent', () => {
  assert.equal(verifyAttestation(TOKEN, HOST, NONCE, reference(TOKEN, HOST, NONCE)), true);
  assert.equal(verifyAttestation(new Secret(TOKEN), HOST, NONCE, createAttestor(TOKEN)(HOST, NONCE)), true);
});

test('verifyAttestation() refuses a MAC made for another Host (a relay to another port)', () => {
  const relayed = reference(TOKEN, '127.0.0.1:48124', NONCE);
  assert.equal(verifyAttestation(TOKEN, HOST, NONCE, relayed), false);
  assert.equal(verifyAttestation(TOKEN, HOST, NONCE, reference(TOKEN, 'localhost:48123', NONCE)), false);
});

test('verifyAttestation() refuses a MAC made for another nonce (a replay)', () => {
  const other = Buffer.alloc(32, 0x5b).toString('base64url');
  assert.equal(verifyAttestation(TOKEN, HOST, NONCE, reference(TOKEN, HOST, other)), false);
});

test('verifyAttestation() refuses a MAC made with a same-length near-miss token', () => {
  const nearMiss = `${TOKEN.slice(0, -1)}${TOKEN.endsWith('_') ? '-' : '_'}`;
  assert.equal(nearMiss.length, TOKEN.length);
  assert.notEqual(nearMiss, TOKEN);
  assert.equal(verifyAttestation(TOKEN, HOST, NONCE, reference(nearMiss, HOST, NONCE)), false);
  assert.equal(verifyAttestation(TOKEN, HOST, NONCE, createAttestor(nearMiss)(HOST, NONCE)), false);
});

test('verifyAttestation() refuses anything but the exact MAC string and never throws on the answer', () => {
  const good = reference(TOKEN, HOST, NONCE);
  const flipped = `${good.slice(0, -1)}${good.endsWith('A') ? 'B' : 'A'}`;
  for (const answer of [
    undefined,
    null,
    42,
    {},
    [good],
    '',
    good.slice(1),
    `${good}=`,
    `${good} `,
    good.toUpperCase(),
    flipped,
    'x'.repeat(10_000),
    TOKEN,
  ]) {
    assert.equal(verifyAttestation(TOKEN, HOST, NONCE, answer), false, JSON.stringify(answer)?.slice(0, 40));
  }
});

test('createAttestor() refuses a short or ill-formed token without showing it', () => {
  for (const bad of ['short', 'has space in it 0123456789', 'a'.repeat(5000)]) {
    assert.throws(
      () => createAttestor(bad),
      (error: Error & { code?: string }) => error.code === 'ERR_INVALID_ARG_VALUE' && !error.message.includes(bad),
    );
  }
  assert.throws(() => createAttestor(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('createAttestor() refuses a nonce or Host that the protocol does not allow', () => {
  const attest = createAttestor(TOKEN);
  for (const nonce of ['', 'short', `${NONCE}A`, NONCE.slice(1), `${NONCE.slice(0, 42)}=`, `${NONCE.slice(0, 42)}+`]) {
    assert.throws(() => attest(HOST, nonce), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' }, nonce);
  }
  for (const host of ['', 'a\nb', 'a b', 'x'.repeat(300), 7 as unknown as string]) {
    assert.throws(() => attest(host, NONCE), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
  }
});

test('isAttestNonce() accepts only the canonical base64url of 32 bytes', () => {
  assert.equal(isAttestNonce(NONCE), true);
  assert.equal(isAttestNonce(createAttestNonce()), true);
  // 43 characters hold 258 bits: the last character must leave the 2 spare bits zero.
  const lastFree = `${NONCE.slice(0, 42)}B`;
  assert.equal(Buffer.from(lastFree, 'base64url').length, 32);
  assert.equal(isAttestNonce(lastFree), false);
  for (const bad of [
    undefined,
    1,
    '',
    `${NONCE}=`,
    NONCE.slice(1),
    Buffer.alloc(31).toString('base64url'),
    Buffer.alloc(33).toString('base64url'),
    Buffer.alloc(32).toString('base64'),
  ]) {
    assert.equal(isAttestNonce(bad), false, String(bad));
  }
});

test('createAttestNonce() makes a fresh well-formed nonce every time', () => {
  const seen = new Set(Array.from({ length: 64 }, () => createAttestNonce()));
  assert.equal(seen.size, 64);
  for (const nonce of seen) assert.equal(isAttestNonce(nonce), true);
});

test('readAttestNonce() takes exactly one Companion-Nonce header with a well-formed nonce', () => {
  assert.equal(ATTEST_NONCE_HEADER, 'companion-nonce');
  assert.deepEqual(ATTEST_ROUTE, { method: 'GET', path: '/companion/attest' });
  assert.equal(readAttestNonce(['Host', HOST, 'Companion-Nonce', NONCE]), NONCE);
  assert.equal(readAttestNonce(['COMPANION-NONCE', NONCE]), NONCE);
  assert.equal(readAttestNonce(['Host', HOST]), null, 'missing');
  assert.equal(readAttestNonce(['Companion-Nonce', NONCE, 'companion-nonce', NONCE]), null, 'repeated');
  assert.equal(readAttestNonce(['Companion-Nonce', `${NONCE}, ${NONCE}`]), null, 'joined');
  assert.equal(readAttestNonce(['Companion-Nonce', 'short']), null, 'malformed');
  assert.equal(readAttestNonce(['Companion-Nonce', ` ${NONCE}`]), null, 'padded');
  assert.equal(readAttestNonce(['Companion-Nonce']), null, 'odd list');
  assert.equal(readAttestNonce('Companion-Nonce' as unknown as string[]), null, 'not a list');
});
