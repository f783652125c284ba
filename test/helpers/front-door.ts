// Starts a real front door in front of an instrumented upstream, with a fresh random loopback token.
import { randomBytes } from 'node:crypto';
import { createAdmission } from '../../src/core/admission.js';
import { createTokenVerifier } from '../../src/core/guard.js';
import { startFrontDoor, type FrontDoor, type FrontDoorOptions } from '../../src/runtime/front-door.js';
import { startUpstream, type Upstream, type UpstreamBehaviour } from './front-door-upstream.js';

export interface FrontDoorFixture {
  readonly door: FrontDoor;
  readonly upstream: Upstream;
  readonly token: string;
  readonly ready: { value: boolean };
  readonly admission: ReturnType<typeof createAdmission>;
  close(): Promise<void>;
}

export async function startFrontDoorFixture(
  options: {
    behaviour?: UpstreamBehaviour;
    maxConcurrent?: number;
    maxQueue?: number;
    door?: Partial<Omit<FrontDoorOptions, 'verifyToken' | 'upstream' | 'admission'>>;
  } = {},
): Promise<FrontDoorFixture> {
  const upstream = await startUpstream(options.behaviour ?? {});
  const token = randomBytes(32).toString('base64url');
  const ready = { value: true };
  const admission = createAdmission({
    maxConcurrent: options.maxConcurrent ?? 4,
    maxQueue: options.maxQueue ?? 16,
    queueTimeoutMs: 5_000,
    ready: true,
  });
  const door = await startFrontDoor({
    verifyToken: createTokenVerifier(token),
    upstream: () => (ready.value ? { kind: 'unix', path: upstream.socketPath } : null),
    admission,
    ...options.door,
  });
  return {
    door,
    upstream,
    token,
    ready,
    admission,
    async close() {
      await door.close();
      await upstream.close();
    },
  };
}
