// A reference hub plus the companion's own authority group pointed at it: the companion's TLS agent
// (platform roots + the hub's generated CA, verification on), the in-memory keychain unless told
// otherwise, the hub's manifest key pinned.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from 'undici';
import { createTlsAgent, fetchWith } from '../../src/common/tls.js';
import { completeSignInAsDevUser } from '../../src/hub/dev-browser.js';
import { startHub, type HubOptions, type RunningHub } from '../../src/hub/index.js';
import { createAuthorityGroup, type AuthorityGroup, type AuthorityOptions } from '../../src/shell/authority.js';
import { installationKey } from '../../src/shell/config.js';
import type { AfterHook } from './hub.js';

export interface CompanionHub {
  readonly hub: RunningHub;
  readonly agent: Agent;
  readonly fetch: typeof globalThis.fetch;
  readonly dir: string;
  authority(overrides?: Partial<AuthorityOptions>): AuthorityGroup;
  /** The dev browser: walks the hub's pages and delivers the callback. */
  browser(consent?: 'allow' | 'deny'): (url: string) => Promise<void>;
}

export async function startCompanionHub(t: AfterHook, options: HubOptions = {}): Promise<CompanionHub> {
  const hub = await startHub(options);
  const agent = createTlsAgent({ extraCas: [hub.caPem] });
  const dir = await mkdtemp(join(tmpdir(), 'companion-it-'));
  t.after(async () => {
    await agent.close();
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });
  const fetch = fetchWith(agent);
  return {
    hub,
    agent,
    fetch,
    dir,
    authority: (overrides = {}) =>
      createAuthorityGroup({
        hub: hub.issuer,
        installationKey: installationKey(dir),
        keychain: 'memory',
        fetch,
        manifestKeys: hub.manifestKey,
        manifestVersionFile: join(dir, 'manifest-version.json'),
        announce: () => undefined,
        ...overrides,
      }),
    browser:
      (consent = 'allow') =>
      async (url: string) => {
        await completeSignInAsDevUser({
          authorizationUrl: url,
          fetch,
          user: hub.user,
          password: hub.password,
          consent,
        });
      },
  };
}
