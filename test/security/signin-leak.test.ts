// P-f secret leakage through the sign-in: the authorization code, the PKCE verifier, the access, refresh
// and ID tokens and the state appear in nothing the companion prints, logs, reports or writes. The test
// harness learns each secret from the wire (an instrumented fetch in process; undici's diagnostics
// channels in a CLI child, reported on fd 3), then scans every hook, every error (message, detail, stack,
// inspection), every page the listener served, everything on stdout and stderr and every file written
// under the test's folders and the temp dir since the test began. The state has exactly one sanctioned
// place: the authorization URL the user must open (it is a CSRF nonce that the browser carries anyway).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { freshAccessToken, signIn, signOut } from '../../src/authority/signin.js';
import { isOpenableUrl, openSystemBrowser } from '../../src/cli/cmd-auth.js';
import type { AuthorityGroup } from '../../src/shell/authority.js';
import { startCompanionHub, type CompanionHub } from '../helpers/companion-hub.js';
import { filesContaining } from '../helpers/secret-service.js';
import { startCli } from '../helpers/signin-cli.js';
import {
  callbackFor,
  deferredBrowser,
  deliver,
  leaksIn,
  recordingFetch,
  type Delivered,
  type RecordingFetch,
} from '../helpers/signin-harness.js';

const BOUND = { timeout: 30_000 };

/** Everything an error could show: message, code, detail, stack, cause, and Node's inspection. */
function errorText(error: unknown): string {
  const e = error as { message?: unknown; code?: unknown; detail?: unknown; stack?: unknown; cause?: unknown };
  return [
    String(e.message),
    String(e.code),
    JSON.stringify(e.detail ?? null),
    String(e.stack),
    inspect(e.cause, { depth: 6 }),
    inspect(error, { depth: 6, showHidden: true }),
  ].join('\n');
}

function pageText(page: Delivered): string {
  return `${JSON.stringify(page.headers)}\n${page.body}`;
}

/** Records process.stdout/stderr writes into `into` (still passing them through) until restored. */
function captureStdio(into: string[]): () => void {
  const originals = { out: process.stdout.write.bind(process.stdout), err: process.stderr.write.bind(process.stderr) };
  const wrap = (original: typeof process.stdout.write) =>
    ((chunk: unknown, ...rest: unknown[]) => {
      into.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'));
      return (original as (...args: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
  process.stdout.write = wrap(originals.out);
  process.stderr.write = wrap(originals.err);
  return () => {
    process.stdout.write = originals.out;
    process.stderr.write = originals.err;
  };
}

interface FlowRecord {
  readonly states: string[];
  readonly codes: string[];
  readonly openedUrls: string[];
  readonly pages: string[];
  readonly refused: string[];
}

/** One sign-in through signIn(): a forged callback first (the refusal path), then the hub's. */
async function signInOnce(
  ch: CompanionHub,
  authority: AuthorityGroup,
  rec: RecordingFetch,
  record: FlowRecord,
): Promise<void> {
  const browser = deferredBrowser();
  const flow = signIn({
    client: authority.client,
    fetch: rec.fetch,
    custody: authority.custody,
    openBrowser: browser.openBrowser,
    onOpen: (url) => record.openedUrls.push(url),
    onRefused: (code) => record.refused.push(code),
    timeoutMs: 20_000,
  });
  flow.catch(() => undefined);
  const callback = await callbackFor(ch, await browser.url);
  record.states.push(callback.searchParams.get('state') ?? '');
  record.codes.push(callback.searchParams.get('code') ?? '');
  const forged = new URL(callback);
  forged.searchParams.set('state', 'forged-state-0123456789abcdefghijklmnop');
  record.pages.push(pageText(await deliver(forged)));
  record.pages.push(pageText(await deliver(callback)));
  await flow;
}

test(
  'P-f sign-in, manifest, refresh, a refused reuse, sign-out and a hub error that echoes secrets leak nothing anywhere',
  BOUND,
  async (t) => {
    const started = Date.now() - 1_000;
    const printed: string[] = [];
    const errors: string[] = [];
    const ch = await startCompanionHub(t, { log: (line) => printed.push(`hub: ${line}`) });
    let echo = false;
    // When `echo` is on, the token endpoint answers with an error that repeats the code and verifier.
    const rec = recordingFetch(ch.fetch, {
      tokenAnswer: (form) =>
        echo
          ? Response.json(
              {
                error: 'invalid_grant',
                error_description: `bad code ${form?.get('code') ?? ''} for ${form?.get('code_verifier') ?? ''}`,
              },
              { status: 400 },
            )
          : undefined,
    });
    const authority = ch.authority({ fetch: rec.fetch, announce: (line) => printed.push(line) });
    const options = { client: authority.client, fetch: rec.fetch, custody: authority.custody };
    const record: FlowRecord = { states: [], codes: [], openedUrls: [], pages: [], refused: [] };
    const restore = captureStdio(printed);
    t.after(restore);
    try {
      await signInOnce(ch, authority, rec, record);
      await authority.fetchManifest();
      const used = await authority.custody.refreshToken();
      await freshAccessToken(options, true); // rotation
      // The used refresh token again: the hub sees a reuse, revokes the grant, custody signs out.
      const state = await authority.custody.state();
      await authority.custody.storeTokens({
        accessToken: (await authority.custody.accessTokenIfFresh())!,
        refreshToken: used,
        expiresAt: 0,
        scope: state.scope,
      });
      await freshAccessToken(options, true).then(
        () => assert.fail('the reuse was accepted'),
        (error: unknown) => {
          assert.equal((error as { code?: string }).code, 'ERR_OAUTH_REFRESH_REFUSED');
          errors.push(errorText(error));
        },
      );
      await signInOnce(ch, authority, rec, record);
      assert.equal((await signOut(options)).revoked, true);
      echo = true;
      await signInOnce(ch, authority, rec, record).then(
        () => assert.fail('the echoing hub error was accepted'),
        (error: unknown) => {
          assert.equal((error as { code?: string }).code, 'ERR_OAUTH_TOKEN_ERROR');
          errors.push(errorText(error));
        },
      );
    } finally {
      restore();
    }

    // The harness saw every kind of secret it scans for.
    assert.ok(rec.secrets.size >= 10, `secrets recorded: ${rec.secrets.size}`);
    for (const code of record.codes) assert.ok(rec.secrets.has(code), 'every code was recorded from the token request');
    const needles = new Map<string, string>();
    [...rec.secrets].forEach((value, i) => needles.set(`secret#${i}`, value));
    record.states.forEach((value, i) => needles.set(`state#${i}`, value));
    assert.ok(record.refused.includes('ERR_OAUTH_STATE_MISMATCH'));

    assert.deepEqual(
      leaksIn([...printed, ...record.refused].join('\n'), needles),
      [],
      'hooks, hub log, stdout, stderr',
    );
    assert.deepEqual(leaksIn(errors.join('\n'), needles), [], 'errors');
    assert.deepEqual(leaksIn(record.pages.join('\n'), needles), [], 'listener pages');
    const withoutStates = new Map([...needles].filter(([label]) => label.startsWith('secret#')));
    assert.deepEqual(
      leaksIn(record.openedUrls.join('\n'), withoutStates),
      [],
      'the authorization URLs carry only the state',
    );
    assert.deepEqual(filesContaining([ch.dir, tmpdir()], [...needles.values()], started), [], 'files written');
  },
);

test(
  'P-f companion login --json --debug prints the authorization URL and nothing secret, and writes no secret',
  BOUND,
  async (t) => {
    const started = Date.now() - 1_000;
    const ch = await startCompanionHub(t);
    const caFile = join(ch.dir, 'hub-ca.pem');
    writeFileSync(caFile, ch.hub.caPem);
    const home = join(ch.dir, 'home');
    mkdirSync(home, { mode: 0o700 });
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home };
    const login = (name: string) =>
      startCli(
        t,
        [
          'login',
          '--no-browser',
          '--json',
          '--debug',
          '--keychain',
          'memory',
          '--hub',
          ch.hub.issuer,
          '--ca',
          caFile,
          '--manifest-key',
          ch.hub.manifestKey,
          '--data-dir',
          join(ch.dir, name),
        ],
        { env, record: true },
      );

    // One that succeeds (after a forged callback), one the user denies (the error path, with --debug).
    const ok = login('ok');
    const okUrl = String((await ok.nextJson((v) => v.event === 'open')).url);
    const callback = await callbackFor(ch, okUrl);
    const forged = new URL(callback);
    forged.searchParams.set('state', 'forged-state-0123456789abcdefghijklmnop');
    assert.equal((await deliver(forged)).status, 400);
    assert.equal((await deliver(callback)).status, 200);
    await ok.nextJson((v) => v.event === 'signed-in');
    assert.equal(await ok.exited(), 0);

    const denied = login('denied');
    const deniedUrl = String((await denied.nextJson((v) => v.event === 'open')).url);
    const deniedCallback = await callbackFor(ch, deniedUrl, 'deny');
    assert.equal((await deliver(deniedCallback)).status, 400);
    assert.equal(
      ((await denied.nextJson((v) => v.error !== undefined)).error as { code?: string }).code,
      'ERR_OAUTH_AUTHORIZATION_DENIED',
    );
    assert.equal(await denied.exited(), 1);
    assert.match(denied.stderr(), /\[ERR_OAUTH_AUTHORIZATION_DENIED\]/);

    const recorded = ok.recorded();
    for (const kind of ['code', 'code_verifier', 'access_token', 'refresh_token', 'id_token'])
      assert.ok(
        recorded.some((r) => r.kind === kind),
        `recorded a ${kind}`,
      );
    assert.equal(
      recorded.find((r) => r.kind === 'code')?.value,
      callback.searchParams.get('code'),
      'the recorder saw the code the browser carried',
    );
    const secrets = new Map<string, string>(recorded.map((r, i) => [`${r.kind}#${i}`, r.value]));
    const states = new Map([
      ['state', callback.searchParams.get('state')!],
      ['denied-state', deniedCallback.searchParams.get('state')!],
    ]);
    const all = new Map([...secrets, ...states]);

    for (const [name, cli, url] of [
      ['ok', ok, okUrl],
      ['denied', denied, deniedUrl],
    ] as const) {
      const stdout = cli.stdout();
      assert.equal(stdout.split(url).length, 2, `${name}: the authorization URL is printed once`);
      assert.deepEqual(
        leaksIn(stdout.split(url).join('<authorization-url>'), all),
        [],
        `${name}: stdout outside the URL`,
      );
      assert.deepEqual(leaksIn(url, secrets), [], `${name}: the URL holds no code, verifier or token`);
      assert.deepEqual(leaksIn(cli.stderr(), all), [], `${name}: stderr`);
    }
    assert.deepEqual(filesContaining([ch.dir, tmpdir()], [...all.values()], started), [], 'files written');
  },
);

test(
  'P-f the browser launcher is handed only plain authorization URLs; anything else is printed instead',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const authority = ch.authority();
    const browser = deferredBrowser();
    const flow = signIn({
      client: authority.client,
      fetch: ch.fetch,
      custody: authority.custody,
      openBrowser: browser.openBrowser,
      onOpen: () => undefined,
      timeoutMs: 5_000,
    });
    flow.catch(() => undefined);
    const real = await browser.url;
    assert.equal(isOpenableUrl(real), true, 'a real authorization URL is openable');
    await deliver(await callbackFor(ch, real));
    await flow;
    for (const bad of [
      `${real}&x='$(touch /tmp/pwned)'`,
      `${real}&x=\`id\``,
      `${real}&x="a"`,
      `${real} --incognito`,
      `${real}&x=$HOME`,
      'http://127.0.0.1/callback',
      'file:///etc/passwd',
      'https://hub.example/auth#frag',
      'https://user@hub.example/auth',
      `https://hub.example/${'a'.repeat(9000)}`,
    ]) {
      assert.equal(isOpenableUrl(bad), false, bad.slice(0, 80));
      await assert.rejects(openSystemBrowser(bad), /not plain enough/);
    }
  },
);
