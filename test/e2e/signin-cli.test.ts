// The whole sign-in as a user does it (issue 6, "done when"): `companion hub` as a child, `companion login
// --no-browser --json` as a child on a private Secret Service, the printed URL driven in headless Chromium
// (the dev login typed in, Allow clicked) until the browser lands on the loopback listener; then
// `companion status` shows the sign-in, the real keychain holds the items under the hub's service, and
// `companion logout` removes all four. Nothing turns TLS verification off: the companion trusts the hub's
// printed CA file, the browser pins the hub's server key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keychainServiceFor } from '../../src/authority/keychain.js';
import { installationKey } from '../../src/shell/config.js';
import { KEYCHAIN_ACCOUNTS } from '../../src/core/keychain-port.js';
import { chromiumPresent, launchChromium, serverCertificate } from '../helpers/browser.js';
import { gate } from '../helpers/gate.js';
import {
  loginItems,
  okValue,
  openKeychainChild,
  secretServiceAvailable,
  secretToolAvailable,
  secretToolLookup,
  startSecretService,
} from '../helpers/secret-service.js';
import { startCli } from '../helpers/signin-cli.js';

const options = {
  ...gate('chromium', chromiumPresent, 'apt-get install chromium'),
  ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
  timeout: 60_000,
};

interface HubLine {
  readonly hub: string;
  readonly ca: string;
  readonly manifestKey: string;
  readonly user: string;
  readonly password: string;
}

test(
  'companion login signs in through a real browser into the real Secret Service; status shows it; logout removes all four items',
  options,
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'companion-signin-e2e-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir };

    const hubChild = startCli(t, ['hub', '--json'], { env: baseEnv });
    const hub = (await hubChild.nextJson((v) => typeof v.hub === 'string', 20_000)) as unknown as HubLine;
    const secretService = await startSecretService();
    t.after(() => secretService.stop());
    const env = { ...secretService.env };
    const dataDir = join(dir, 'data');
    const common = ['--hub', hub.hub, '--ca', hub.ca, '--data-dir', dataDir];
    const service = keychainServiceFor(hub.hub, installationKey(dataDir));

    // login: the listener is up and the URL printed.
    const login = startCli(t, ['login', '--no-browser', '--json', '--manifest-key', hub.manifestKey, ...common], {
      env,
    });
    const open = await login.nextJson((v) => v.event === 'open');
    const authorizationUrl = String(open.url);
    const redirect = new URL(new URL(authorizationUrl).searchParams.get('redirect_uri') ?? '');
    assert.equal(redirect.origin.startsWith('http://127.0.0.1:'), true);

    // The user: headless Chromium trusting only the hub's key, typing the dev login and allowing.
    const chromium = await launchChromium({
      trustCertificates: [await serverCertificate(hub.hub, await readFile(hub.ca, 'utf8'))],
    });
    t.after(() => chromium.close());
    const page = await chromium.context.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(authorizationUrl);
    await page.fill('#username', hub.user);
    await page.fill('#password', hub.password);
    await page.click('#sign-in');
    await page.waitForSelector('#allow');
    await page.click('#allow');
    await page.waitForURL((url) => url.origin === redirect.origin && url.pathname === redirect.pathname);
    assert.equal(await page.title(), 'Signed in');
    const pageText = await page.content();
    assert.ok(
      !pageText.includes(new URL(page.url()).searchParams.get('code') ?? '<none>'),
      'the page does not show the code',
    );
    await chromium.close();

    const signedIn = await login.nextJson((v) => v.event === 'signed-in');
    assert.equal(signedIn.user, hub.user);
    assert.equal(await login.exited(), 0);
    assert.match(login.stderr(), /^$/, 'login printed nothing on stderr');

    // status: signed in, as whom, never a token.
    const status = startCli(t, ['status', '--json', ...common], { env });
    const shown = await status.nextJson((v) => 'signedIn' in v);
    assert.equal(shown.signedIn, true);
    assert.equal(shown.user, hub.user);
    assert.equal(shown.keychain, 'available');
    assert.equal(await status.exited(), 0);

    // The real keychain holds the token items under the hub's service.
    const keychain = await openKeychainChild(env, { service });
    t.after(() => keychain.close());
    for (const account of ['refresh-token', 'access-token']) {
      const value = okValue(await keychain.call('get', account), `get ${account}`, keychain, secretService);
      assert.ok(typeof value === 'string' && value.length > 20, `${account} is in the Secret Service`);
    }
    if (secretToolAvailable)
      assert.notEqual(await secretToolLookup(env, service, 'refresh-token'), null, 'secret-tool sees it too');
    // The other two accounts exist on a companion that has run `up`; put them there so logout must remove all four.
    okValue(
      await keychain.call('set', 'loopback-token', 'L'.repeat(43)),
      'set loopback-token',
      keychain,
      secretService,
    );
    okValue(
      await keychain.call('set', 'installation-id', '6f1c1e9a-7a0e-4c39-9d5e-2f7f0a0b1c2d'),
      'set installation-id',
      keychain,
      secretService,
    );
    assert.equal((await loginItems(env)).length, 4);

    // logout: revoked at the hub, all four items gone.
    const logout = startCli(t, ['logout', '--json', ...common], { env });
    assert.deepEqual(await logout.nextJson((v) => v.event === 'signed-out'), {
      event: 'signed-out',
      revoked: true,
      failed: [],
    });
    assert.equal(await logout.exited(), 0);
    for (const account of KEYCHAIN_ACCOUNTS)
      assert.deepEqual(await keychain.call('get', account), { ok: true, value: null }, `${account} was removed`);
    assert.deepEqual(await loginItems(env), []);

    const after = startCli(t, ['status', '--json', ...common], { env });
    assert.equal((await after.nextJson((v) => 'signedIn' in v)).signedIn, false);
    assert.equal(await after.exited(), 0);
    await hubChild.stop();
  },
);
