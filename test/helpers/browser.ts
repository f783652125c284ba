// Debian's Chromium driven by playwright-core (never a downloaded browser), started with the flags of
// PLATFORM.md, a fresh user-data-dir and a private HOME. TLS is never switched off: a test that talks to
// a hub over HTTPS pins exactly that hub's server key with --ignore-certificate-errors-spki-list (Chromium
// accepts a certificate with a listed key, nothing else; `ignoreHTTPSErrors` is not used). Debian's
// Chromium has no NSS tools here (certutil), which would be the other way to trust the generated CA.
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const chromiumPresent = existsSync(CHROMIUM_PATH);

/** The flags every test browser starts with (PLATFORM.md), besides headless and the user-data-dir. */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
] as const;

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo: an entry of --ignore-certificate-errors-spki-list. */
export function spkiPin(certPem: string): string {
  return createHash('sha256')
    .update(new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
}

export interface LaunchedChromium {
  readonly context: BrowserContext;
  /** Closes the browser and removes its profile and HOME. */
  close(): Promise<void>;
}

/**
 * Starts headless Chromium with a fresh profile. `trustCertificates` are server certificates (PEM) whose
 * keys the browser accepts (pinned by SPKI hash); every other certificate error still fails.
 */
export async function launchChromium(
  options: { trustCertificates?: readonly string[]; extraArgs?: readonly string[] } = {},
): Promise<LaunchedChromium> {
  const root = mkdtempSync(join(tmpdir(), 'companion-chromium-'));
  const profile = join(root, 'profile');
  const home = join(root, 'home');
  mkdirSync(home, { mode: 0o700 });
  const pins = (options.trustCertificates ?? []).map(spkiPin);
  const args = [
    ...CHROMIUM_FLAGS,
    ...(pins.length === 0 ? [] : [`--ignore-certificate-errors-spki-list=${pins.join(',')}`]),
    ...(options.extraArgs ?? []),
  ];
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, LANG: 'C.UTF-8' },
      timeout: 30_000,
    });
  } catch (error) {
    rmSync(root, { recursive: true, force: true });
    throw error;
  }
  let closed = false;
  return {
    context,
    async close() {
      if (closed) return;
      closed = true;
      await context.close().catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** The hub's server certificate (PEM), fetched over a connection that verifies it against `caPem`. */
export function serverCertificate(hubUrl: string, caPem: string): Promise<string> {
  const url = new URL(hubUrl);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect(
      { host: url.hostname, port: Number(url.port), ca: caPem, rejectUnauthorized: true, timeout: 5_000 },
      () => {
        const raw = socket.getPeerCertificate().raw;
        socket.end();
        resolve(new X509Certificate(raw).toString());
      },
    );
    socket.once('error', reject);
    socket.once('timeout', () => socket.destroy(new Error('TLS connect timeout')));
  });
}
