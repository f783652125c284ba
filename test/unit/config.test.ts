import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  defaultDataDir,
  installationKey,
  normalizeSetting,
  readConfigFile,
  resolveConfig,
  saveConfigValues,
} from '../../src/shell/config.js';

test('resolveConfig() takes flags over the environment and makes paths absolute', () => {
  const config = resolveConfig(
    { hub: 'https://hub.example/', 'data-dir': 'rel/dir' },
    { COMPANION_HUB: 'https://other.example', COMPANION_CA: 'ca.pem', COMPANION_MANIFEST_KEY: 'ed25519:x' },
  );
  assert.equal(config.hub, 'https://hub.example');
  assert.ok(config.dataDir.startsWith('/') && config.dataDir.endsWith('rel/dir'));
  assert.ok(config.caFile?.startsWith('/'));
  assert.equal(config.manifestKeys, 'ed25519:x');
  assert.equal(config.keychain, 'os');
  assert.equal(config.sandbox, 'required');
});

test('resolveConfig() refuses a non-https hub, an unknown keychain and bad thread counts with ERR_CONFIG', () => {
  for (const flags of [
    { hub: 'http://hub.example' },
    { hub: 'not a url' },
    { keychain: 'file' },
    { threads: '0' },
    { threads: 'x' },
  ]) {
    assert.throws(() => resolveConfig(flags, {}), { code: 'ERR_CONFIG' }, JSON.stringify(flags));
  }
});

test('resolveConfig() allows an unsandboxed start only when asked explicitly', () => {
  assert.equal(resolveConfig({ 'allow-unsandboxed': true }, {}).sandbox, 'off');
  assert.equal(resolveConfig({}, { COMPANION_ALLOW_UNSANDBOXED: '1' }).sandbox, 'off');
  assert.equal(resolveConfig({}, { COMPANION_ALLOW_UNSANDBOXED: 'yes' }).sandbox, 'required');
});

test("defaultDataDir() follows each platform's app-data convention", () => {
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

test("resolveConfig() takes the data dir's config file below flags and environment", async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'companion-config-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = join(root, 'data');
  const key = `ed25519:${Buffer.alloc(32, 1).toString('base64url')}`;
  await saveConfigValues(dataDir, {
    hub: 'https://file.example',
    ca: join(root, 'ca.pem'),
    'manifest-key': key,
    threads: '2',
  });
  const fromFile = resolveConfig({}, { COMPANION_HOME: dataDir });
  assert.equal(fromFile.hub, 'https://file.example');
  assert.equal(fromFile.caFile, join(root, 'ca.pem'));
  assert.equal(fromFile.manifestKeys, key);
  assert.equal(fromFile.threads, 2);
  assert.equal(
    resolveConfig({}, { COMPANION_HOME: dataDir, COMPANION_HUB: 'https://env.example', COMPANION_THREADS: '5' }).hub,
    'https://env.example',
  );
  assert.equal(resolveConfig({}, { COMPANION_HOME: dataDir, COMPANION_THREADS: '5' }).threads, 5);
  assert.equal(
    resolveConfig({ hub: 'https://flag.example', 'data-dir': dataDir }, { COMPANION_HUB: 'https://env.example' }).hub,
    'https://flag.example',
  );
  assert.equal(
    resolveConfig({}, { COMPANION_HOME: join(root, 'other') }).hub,
    null,
    'another data dir has its own file',
  );
});

test('readConfigFile() refuses a damaged or loose file with ERR_CONFIG_FILE; normalizeSetting() checks as the flags do', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'companion-config-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  assert.deepEqual(readConfigFile(join(root, 'missing')), {});
  const file = join(root, 'config.json');
  for (const text of [
    '',
    '[]',
    'null',
    '{"hub": 1}',
    '{"hub": "http://x.example"}',
    '{"ca": "relative.pem"}',
    '{"threads": "0"}',
    '{"manifest-key": "ed25519:AAAA"}',
    '{"extra": "x"}',
  ]) {
    writeFileSync(file, text, { mode: 0o600 });
    assert.throws(() => readConfigFile(root), { code: 'ERR_CONFIG_FILE' }, text);
  }
  writeFileSync(file, '{"hub": "https://hub.example/"}', { mode: 0o600 });
  assert.deepEqual(readConfigFile(root), { hub: 'https://hub.example' });
  chmodSync(file, 0o640);
  assert.throws(
    () => readConfigFile(root),
    (error: { code?: string; message?: string }) =>
      error.code === 'ERR_CONFIG_FILE' && (error.message ?? '').includes(`chmod 600 ${file}`),
  );
  assert.equal(normalizeSetting('hub', 'https://h.example//'), 'https://h.example');
  assert.equal(normalizeSetting('ca', 'x.pem'), join(process.cwd(), 'x.pem'));
  assert.equal(normalizeSetting('threads', '8'), '8');
  for (const [key, value] of [
    ['hub', 'http://h.example'],
    ['hub', ''],
    ['threads', '257'],
    ['threads', '-1'],
    ['manifest-key', 'ed25519:!!'],
  ] as const) {
    assert.throws(() => normalizeSetting(key, value), { code: 'ERR_CONFIG' }, `${key} ${value}`);
  }
});
