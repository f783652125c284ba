import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultDataDir, installationKey, resolveConfig } from '../../src/shell/config.js';

test('resolveConfig() takes flags over the environment and makes paths absolute', () => {
  const config = resolveConfig({ hub: 'https://hub.example/', 'data-dir': 'rel/dir' }, { COMPANION_HUB: 'https://other.example', COMPANION_CA: 'ca.pem', COMPANION_MANIFEST_KEY: 'ed25519:x' });
  assert.equal(config.hub, 'https://hub.example');
  assert.ok(config.dataDir.startsWith('/') && config.dataDir.endsWith('rel/dir'));
  assert.ok(config.caFile?.startsWith('/'));
  assert.equal(config.manifestKeys, 'ed25519:x');
  assert.equal(config.keychain, 'os');
  assert.equal(config.sandbox, 'required');
});

test('resolveConfig() refuses a non-https hub, an unknown keychain and bad thread counts with ERR_CONFIG', () => {
  for (const flags of [{ hub: 'http://hub.example' }, { hub: 'not a url' }, { keychain: 'file' }, { threads: '0' }, { threads: 'x' }]) {
    assert.throws(() => resolveConfig(flags, {}), { code: 'ERR_CONFIG' }, JSON.stringify(flags));
  }
});

test('resolveConfig() allows an unsandboxed start only when asked explicitly', () => {
  assert.equal(resolveConfig({ 'allow-unsandboxed': true }, {}).sandbox, 'off');
  assert.equal(resolveConfig({}, { COMPANION_ALLOW_UNSANDBOXED: '1' }).sandbox, 'off');
  assert.equal(resolveConfig({}, { COMPANION_ALLOW_UNSANDBOXED: 'yes' }).sandbox, 'required');
});

test('defaultDataDir() follows each platform\'s app-data convention', () => {
  assert.match(defaultDataDir({ XDG_DATA_HOME: '/x/data' }, 'linux'), /^\/x\/data\/companion$/);
  assert.match(defaultDataDir({ XDG_DATA_HOME: 'relative' }, 'linux'), /\.local\/share\/companion$/);
  assert.match(defaultDataDir({}, 'darwin'), /Library\/Application Support\/Companion$/);
  assert.match(defaultDataDir({ LOCALAPPDATA: 'C:\\Users\\u\\AppData\\Local' }, 'win32'), /Companion$/);
});

test('installationKey() is 16 hex digits, stable for one data dir (before and after it exists, through a symlink) and differs between two', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'companion-key-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'data');
  const before = installationKey(dir);
  assert.match(before, /^[0-9a-f]{16}$/);
  mkdirSync(dir);
  assert.equal(installationKey(dir), before, 'the same once the folder exists');
  assert.equal(installationKey(`${dir}/./`), before);
  symlinkSync(root, join(root, 'link'));
  assert.equal(installationKey(join(root, 'link', 'data')), before, 'the same through a symlink');
  assert.notEqual(installationKey(join(root, 'other')), before);
  assert.ok(!before.includes('data'));
});
