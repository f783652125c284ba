// The hub's sign-in and consent pages in a real headless Chromium: a user types the dev login, allows
// (or denies) the request, and a one-shot loopback listener on 127.0.0.1:0 receives code, state and iss.
// The browser trusts only the hub's own server key (SPKI pin); nothing turns certificate checks off.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oauth from 'oauth4webapi';
import { gate } from '../helpers/gate.js';
import { chromiumPresent, launchChromium } from '../helpers/browser.js';
import { authorizationUrl, discover, fetchManifest, pkcePair, startTestHub, type TestHub } from '../helpers/hub.js';

const browserGate = gate('chromium', chromiumPresent, 'apt-get install chromium');

interface Callback {
  readonly url: URL;
  readonly headers: IncomingHttpHeaders;
}

/** A loopback listener for one callback on `/callback`; answers with a page that holds nothing. */
async function loopbackListener(t: {
  after(fn: () => Promise<void> | void): void;
}): Promise<{ redirectUri: string; callback: Promise<Callback> }> {
  let deliver: (value: Callback) => void = () => undefined;
  const callback = new Promise<Callback>((resolve) => {
    deliver = resolve;
  });
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method !== 'GET' || url.pathname !== '/callback') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      'Referrer-Policy': 'no-referrer',
    });
    res.end('<!DOCTYPE html><title>Done</title><p>You can close this window.</p>');
    deliver({ url: new URL(req.url ?? '/', `http://${req.headers.host ?? '127.0.0.1'}`), headers: req.headers });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { redirectUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/callback`, callback };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function openBrowser(t: { after(fn: () => Promise<void> | void): void }, hub: TestHub) {
  const chromium = await launchChromium({ trustCertificates: [hub.hubCertPem] });
  t.after(() => chromium.close());
  const page = await chromium.context.newPage();
  page.setDefaultTimeout(15_000);
  return page;
}

test(
  'a user signs in and allows in headless Chromium; the loopback listener gets code, state and iss',
  browserGate,
  async (t) => {
    const hub = await startTestHub(t);
    const as = await discover(hub);
    const { redirectUri, callback } = await loopbackListener(t);
    const { verifier, challenge } = await pkcePair();
    const state = oauth.generateRandomState();
    const page = await openBrowser(t, hub);

    await page.goto(authorizationUrl(as, hub, { redirectUri, state, codeChallenge: challenge }).href);
    assert.equal(await page.title(), 'Sign in to the hub');
    await page.fill('#username', hub.user);
    await page.fill('#password', hub.password);
    await page.click('#sign-in');
    await page.waitForSelector('#allow');
    assert.match((await page.textContent('main')) ?? '', /companion:manifest/);
    await page.click('#allow');
    const received = await within(callback, 20_000, 'the loopback callback');

    assert.equal(received.url.searchParams.get('state'), state);
    assert.equal(received.url.searchParams.get('iss'), hub.issuer);
    assert.ok((received.url.searchParams.get('code') ?? '').length > 20);
    assert.equal(received.headers.referer, undefined, 'no Referer leaks the hub page to the listener');

    // The code is good: exchange it as the companion would.
    const client: oauth.Client = { client_id: hub.clientId };
    const params = oauth.validateAuthResponse(as, client, received.url, state);
    const tokens = await oauth.processAuthorizationCodeResponse(
      as,
      client,
      await oauth.authorizationCodeGrantRequest(
        as,
        client,
        oauth.None(),
        params,
        redirectUri,
        verifier,
        hub.oauthOptions,
      ),
    );
    assert.equal((await fetchManifest(hub, tokens.access_token)).status, 200);
  },
);

test(
  'a user who denies in Chromium sends access_denied with iss and state to the loopback listener',
  browserGate,
  async (t) => {
    const hub = await startTestHub(t);
    const as = await discover(hub);
    const { redirectUri, callback } = await loopbackListener(t);
    const { challenge } = await pkcePair();
    const state = oauth.generateRandomState();
    const page = await openBrowser(t, hub);

    await page.goto(authorizationUrl(as, hub, { redirectUri, state, codeChallenge: challenge }).href);
    await page.fill('#username', hub.user);
    await page.fill('#password', hub.password);
    await page.click('#sign-in');
    await page.click('#deny');
    const received = await within(callback, 20_000, 'the loopback callback');
    assert.equal(received.url.searchParams.get('error'), 'access_denied');
    assert.equal(received.url.searchParams.get('iss'), hub.issuer);
    assert.equal(received.url.searchParams.get('state'), state);
    assert.equal(received.url.searchParams.get('code'), null);
  },
);

test(
  "the pinned browser still refuses a certificate it was not told to trust (the model host's)",
  browserGate,
  async (t) => {
    const hub = await startTestHub(t);
    const page = await openBrowser(t, hub);
    await assert.rejects(page.goto(hub.models[0]!.url), /ERR_CERT/);
  },
);
