// Faults around the sign-in (issue 6): the hub down before and during the flow, a token endpoint that
// answers 500, a hub certificate from another CA, a user who closes the browser (timeout, with a browser
// connection still open), a port already in use, a keychain that is locked or fails halfway while the
// tokens are stored, a refresh while the hub is down, and a sign-out while the hub never answers. In
// every case the error is coded, nothing (or nothing half) is stored, and the listener's port is free.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedirectListener } from '../../src/authority/redirect-listener.js';
import { freshAccessToken, signIn, signOut, type HubClient } from '../../src/authority/signin.js';
import { main } from '../../src/cli/main.js';
import { createTlsAgent, fetchWith } from '../../src/common/tls.js';
import { createCustody } from '../../src/core/custody.js';
import { KEYCHAIN_ACCOUNTS } from '../../src/core/keychain-port.js';
import { Secret } from '../../src/core/secret.js';
import type { AuthorityGroup } from '../../src/shell/authority.js';
import { startCompanionHub, type CompanionHub } from '../helpers/companion-hub.js';
import { createMemoryKeychain } from '../helpers/memory-keychain.js';
import {
  blackHole,
  callbackFor,
  closedPort,
  deferredBrowser,
  deliver,
  idleConnection,
  listenerPortOf,
  listeningServers,
  portRefuses,
  recordingFetch,
} from '../helpers/signin-harness.js';

const BOUND = { timeout: 20_000 };

async function nothingStored(authority: AuthorityGroup): Promise<void> {
  for (const account of KEYCHAIN_ACCOUNTS)
    assert.equal(await authority.keychain.get(account), null, `${account} is not stored`);
}

/** Starts signIn() with a browser stand-in; returns the flow and the authorization URL once it is open. */
async function startFlow(
  ch: CompanionHub,
  authority: AuthorityGroup,
  fetch: typeof globalThis.fetch,
  custody = authority.custody,
) {
  const browser = deferredBrowser();
  const flow = signIn({
    client: authority.client,
    fetch,
    custody,
    openBrowser: browser.openBrowser,
    onOpen: () => undefined,
    timeoutMs: 15_000,
  });
  flow.catch(() => undefined);
  const url = await browser.url;
  return { flow, url, port: listenerPortOf(url), callback: () => callbackFor(ch, url) };
}

test('signIn() fails with ERR_HUB_UNREACHABLE and starts no listener when the hub is down', BOUND, async (t) => {
  const ch = await startCompanionHub(t);
  const down = `https://127.0.0.1:${await closedPort()}`;
  const authority = ch.authority({ hub: down });
  const before = listeningServers();
  let opened = false;
  await assert.rejects(
    signIn({ client: authority.client, fetch: ch.fetch, custody: authority.custody, onOpen: () => (opened = true) }),
    (error: { code?: string; detail?: { reason?: string } }) => {
      assert.equal(error.code, 'ERR_HUB_UNREACHABLE');
      assert.equal(error.detail?.reason, 'ECONNREFUSED');
      return true;
    },
  );
  assert.equal(opened, false);
  assert.ok(listeningServers() <= before, 'no listener was started');
  await nothingStored(authority);
});

test(
  'signIn() fails with ERR_HUB_UNREACHABLE, frees its port and stores nothing when the hub goes down before the code exchange',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const authority = ch.authority();
    const rec = recordingFetch(ch.fetch);
    const { flow, port, callback } = await startFlow(ch, authority, rec.fetch);
    const location = await callback();
    await ch.hub.close();
    assert.equal((await deliver(location)).status, 502, 'the browser got its failure page (the hub did not finish)');
    await assert.rejects(flow, { code: 'ERR_HUB_UNREACHABLE' });
    assert.equal(rec.tokenPosts, 1);
    assert.ok(await portRefuses(port));
    await nothingStored(authority);
  },
);

test(
  'signIn() fails with ERR_OAUTH_TOKEN_RESPONSE (status 500) and stores nothing when the token endpoint answers 500',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    // RFC 6749 §5.2 error bodies come with 400/401; a 5xx is not a protocol answer, whatever its body.
    const answers: [string, () => Response, string][] = [
      [
        'an OAuth error body',
        () => Response.json({ error: 'server_error', error_description: 'the database is down' }, { status: 500 }),
        'ERR_OAUTH_TOKEN_RESPONSE',
      ],
      [
        'an HTML body',
        () =>
          new Response('<html><body>Internal Server Error</body></html>', {
            status: 500,
            headers: { 'content-type': 'text/html' },
          }),
        'ERR_OAUTH_TOKEN_RESPONSE',
      ],
    ];
    for (const [name, answer, code] of answers) {
      const authority = ch.authority();
      const rec = recordingFetch(ch.fetch, { tokenAnswer: answer });
      const { flow, port, callback } = await startFlow(ch, authority, rec.fetch);
      assert.equal((await deliver(await callback())).status, 502, 'the page says the hub did not finish the sign-in');
      await assert.rejects(flow, (error: { code?: string; detail?: { status?: number } }) => {
        assert.equal(error.code, code, name);
        assert.equal(error.detail?.status, 500, name);
        return true;
      });
      assert.ok(await portRefuses(port), name);
      await nothingStored(authority);
    }
  },
);

test(
  'signIn() and companion login fail with a coded TLS error and store nothing when the hub certificate is from another CA',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const other = await startCompanionHub(t);
    // The companion trusts the platform roots plus another hub's CA: the hub's certificate does not verify.
    const agent = createTlsAgent({ extraCas: [other.hub.caPem] });
    t.after(() => agent.close());
    const authority = ch.authority({ fetch: fetchWith(agent) });
    const before = listeningServers();
    await assert.rejects(
      signIn({
        client: authority.client,
        fetch: fetchWith(agent),
        custody: authority.custody,
        onOpen: () => undefined,
      }),
      (error: { code?: string; message?: string; detail?: { reason?: string } }) => {
        assert.equal(error.code, 'ERR_HUB_UNREACHABLE');
        assert.equal(error.detail?.reason, 'tls');
        assert.match(
          error.message ?? '',
          /certificate at https:\/\/127\.0\.0\.1:[0-9]+ could not be verified: it is not trusted \([A-Z_]+\); .*--ca FILE/,
        );
        return true;
      },
    );
    assert.ok(listeningServers() <= before, 'no listener was started');
    await nothingStored(authority);

    // The same through the CLI, without --ca: one clear line, exit 1.
    const dir = await mkdtemp(join(tmpdir(), 'companion-signin-tls-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const out: string[] = [];
    const err: string[] = [];
    const status = await main(
      ['login', '--no-browser', '--keychain', 'memory', '--hub', ch.hub.issuer, '--data-dir', dir],
      {
        out: (line) => out.push(line),
        err: (line) => err.push(line),
        write: () => undefined,
        isTty: false,
        env: {},
      },
    );
    assert.equal(status, 1);
    assert.match(
      err.join('\n'),
      /companion login: the hub's TLS certificate at https:\/\/127\.0\.0\.1:[0-9]+ could not be verified: it is not trusted .*--ca FILE.* \[ERR_HUB_UNREACHABLE\]/,
    );
    assert.deepEqual(out, []);
  },
);

test(
  'signIn() ends with ERR_OAUTH_CALLBACK_TIMEOUT and frees its port when the user closes the browser, even with a connection left open',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const authority = ch.authority();
    let port = 0;
    let preconnect: Awaited<ReturnType<typeof idleConnection>> | undefined;
    // The "browser" pre-connects to the listener (as Chromium does) and then goes away without a request.
    await assert.rejects(
      signIn({
        client: authority.client,
        fetch: ch.fetch,
        custody: authority.custody,
        timeoutMs: 300,
        openBrowser: async (url) => {
          port = listenerPortOf(url);
          preconnect = await idleConnection(port);
        },
        onOpen: () => undefined,
      }),
      { code: 'ERR_OAUTH_CALLBACK_TIMEOUT' },
    );
    t.after(() => preconnect?.socket.destroy());
    assert.ok(await portRefuses(port), 'the port is free');
    await preconnect!.closed; // the idle connection was closed by the listener, not left to the browser
    await nothingStored(authority);
  },
);

test(
  'startRedirectListener() and signIn() bind another ephemeral port when a port is already taken',
  BOUND,
  async (t) => {
    // Another process's listener on a loopback port (bound first, here by this process).
    const squatter = createServer(() => undefined);
    await new Promise<void>((resolve) => squatter.listen({ host: '127.0.0.1', port: 0 }, resolve));
    t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const taken = (squatter.address() as { port: number }).port;
    const listener = await startRedirectListener({ validate: () => 'ok', timeoutMs: 5_000 });
    assert.notEqual(listener.port, taken);
    await listener.cancel();

    const ch = await startCompanionHub(t);
    const authority = ch.authority();
    const { flow, port, callback } = await startFlow(ch, authority, ch.fetch);
    assert.notEqual(port, taken);
    assert.equal((await deliver(await callback())).status, 200);
    await flow;
    assert.equal((await authority.state()).signedIn, true);
  },
);

test(
  'signIn() fails with ERR_CUSTODY_STORE_FAILED and leaves nothing half-stored when the keychain is locked or fails halfway',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const authority = ch.authority();
    const cases: [string, (k: ReturnType<typeof createMemoryKeychain>) => void, string][] = [
      ['locked before the store', (k) => k.lock('ERR_KEYCHAIN_LOCKED'), 'ERR_KEYCHAIN_LOCKED'],
      // The refresh token is written, then the keychain fails on the access item: both are scrubbed.
      [
        'failing on the second item',
        (k) => k.failNext('set', 'access-token', 'ERR_KEYCHAIN_LOCKED'),
        'ERR_KEYCHAIN_LOCKED',
      ],
    ];
    for (const [name, fault, keychainCode] of cases) {
      const keychain = createMemoryKeychain();
      const custody = createCustody({ keychain, now: Date.now });
      const { flow, port, callback } = await startFlow(ch, authority, ch.fetch, custody);
      fault(keychain);
      const page = await deliver(await callback());
      assert.equal(page.status, 500, name);
      assert.match(page.body, /could not store the tokens/, name);
      await assert.rejects(flow, (error: { code?: string; detail?: { keychain?: string } }) => {
        assert.equal(error.code, 'ERR_CUSTODY_STORE_FAILED', name);
        assert.equal(error.detail?.keychain, keychainCode, name);
        return true;
      });
      assert.ok(await portRefuses(port), name);
      keychain.unlock();
      assert.equal(keychain.items.size, 0, `${name}: nothing (half) stored`);
      assert.equal((await custody.state()).signedIn, false, name);
    }
  },
);

test('freshAccessToken() keeps the tokens when the hub is down during a refresh', BOUND, async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  const { flow, callback } = await startFlow(ch, authority, ch.fetch);
  await deliver(await callback());
  await flow;
  const refresh = (await authority.custody.refreshToken())!.reveal();
  await ch.hub.close();
  await assert.rejects(
    freshAccessToken({ client: authority.client, fetch: ch.fetch, custody: authority.custody }, true),
    { code: 'ERR_HUB_UNREACHABLE' },
  );
  assert.equal((await authority.state()).signedIn, true, 'a network failure is not a sign-out');
  assert.equal((await authority.custody.refreshToken())?.reveal(), refresh);
});

test(
  'signOut() deletes every keychain item and returns within its bound when the hub never answers',
  BOUND,
  async (t) => {
    const hole = await blackHole();
    t.after(() => hole.close());
    const keychain = createMemoryKeychain({
      'installation-id': '6f1c1e9a-7a0e-4c39-9d5e-2f7f0a0b1c2d',
      'loopback-token': 'l'.repeat(43),
    });
    const custody = createCustody({ keychain, now: Date.now });
    await custody.storeTokens({
      accessToken: new Secret('a'.repeat(40)),
      refreshToken: new Secret('r'.repeat(40)),
      expiresAt: Date.now() + 3600_000,
      scope: ['openid'],
    });
    assert.equal(keychain.items.size, 4);
    const client: HubClient = {
      issuer: `https://127.0.0.1:${hole.port}`,
      clientId: 'companion',
      scope: ['openid'],
      scopeCeiling: ['openid'],
    };
    const agent = createTlsAgent();
    t.after(() => agent.close());
    const outcome = await signOut({ client, fetch: fetchWith(agent), custody, revokeTimeoutMs: 300 });
    assert.deepEqual(outcome, { revoked: false, failedAccounts: [], keychainCodes: [] });
    assert.equal(keychain.items.size, 0);
  },
);

test(
  'signOut() reports the items it could not delete when the keychain is locked, and still revokes at the hub',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const keychain = createMemoryKeychain();
    const custody = createCustody({ keychain, now: Date.now });
    const authority = ch.authority();
    const { flow, callback } = await startFlow(ch, authority, ch.fetch, custody);
    await deliver(await callback());
    await flow;
    const rec = recordingFetch(ch.fetch);
    keychain.failNext('delete', 'refresh-token', 'ERR_KEYCHAIN_LOCKED');
    const outcome = await signOut({ client: authority.client, fetch: rec.fetch, custody });
    assert.deepEqual(outcome, {
      revoked: true,
      failedAccounts: ['refresh-token'],
      keychainCodes: ['ERR_KEYCHAIN_LOCKED'],
    });
    assert.ok(rec.requests.some((r) => r.endsWith('/token/revocation')));
    assert.equal(keychain.items.has('access-token'), false);
    // The lone refresh token left behind is not used (custody sees a damaged pair), and the hub revoked it.
    assert.equal((await custody.state()).damaged, true);
    await assert.rejects(freshAccessToken({ client: authority.client, fetch: ch.fetch, custody }, true), {
      code: 'ERR_NOT_SIGNED_IN',
    });
  },
);

test(
  'companion login refuses a --timeout outside 1 to 3600 seconds with a usage error before contacting the hub',
  BOUND,
  async () => {
    for (const value of ['abc', '0', '-5', '1.5', '3601', '']) {
      const err: string[] = [];
      const status = await main(
        ['login', '--no-browser', '--keychain', 'memory', '--hub', 'https://127.0.0.1:9', `--timeout=${value}`],
        { out: () => undefined, err: (line) => err.push(line), write: () => undefined, isTty: false, env: {} },
      );
      assert.equal(status, 2, value);
      assert.match(err.join('\n'), /--timeout takes a whole number of seconds from 1 to 3600/, value);
    }
  },
);
