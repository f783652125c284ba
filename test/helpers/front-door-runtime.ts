// The front door in front of the REAL bundled runtime (node-llama-cpp on the generated tiny GGUF,
// threads 1), optionally inside the sandbox, with the official openai SDK pointed at it exactly as a
// local client would be: base URL `door.url + '/v1'`, API key = the loopback token.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import OpenAI from 'openai';
import { createAdmission } from '../../src/core/admission.js';
import { createTokenVerifier } from '../../src/core/guard.js';
import {
  startFrontDoor,
  type FrontDoor,
  type FrontDoorLimits,
  type FrontDoorRequestEvent,
} from '../../src/runtime/front-door.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeExit, type RuntimeHandle, type SpawnWrap } from '../../src/runtime/spawn.js';
import { tempDir, writeTinyModel } from './runtime-env.js';

export interface RuntimeDoor {
  readonly handle: RuntimeHandle;
  readonly door: FrontDoor;
  readonly token: string;
  /** The official SDK, pointed at the front door with the loopback token. */
  readonly openai: OpenAI;
  /** One entry per request the front door finished (method, path, status, code). */
  readonly requests: FrontDoorRequestEvent[];
  /** The runtime's stderr lines (it never logs prompts or completions). */
  readonly stderr: string[];
  readonly exits: RuntimeExit[];
  /** False once the runtime has exited (what the supervisor tells the front door). */
  readonly ready: { value: boolean };
  readonly dataDir: string;
  close(): Promise<void>;
}

export interface RuntimeDoorOptions {
  readonly wrap?: SpawnWrap;
  readonly bind?: 'unix' | 'tcp';
  /** Default 32768: room for a long generation (disconnect and kill tests). */
  readonly contextSize?: number;
  /** The runtime's sequences (default: its own choice). */
  readonly parallel?: number;
  readonly limits?: Partial<FrontDoorLimits>;
  readonly maxConcurrent?: number;
}

export async function startRuntimeDoor(options: RuntimeDoorOptions = {}): Promise<RuntimeDoor> {
  const dir = tempDir('companion-door-rt-');
  const dataDir = join(dir.path, 'data');
  const modelPath = writeTinyModel(dir.path);
  const stderr: string[] = [];
  const exits: RuntimeExit[] = [];
  const ready = { value: false };
  let handle: RuntimeHandle;
  try {
    handle = await spawnRuntime(
      bundledProfile({
        modelPath,
        threads: 1,
        contextSize: options.contextSize ?? 32768,
        ...(options.parallel === undefined ? {} : { parallel: options.parallel }),
        modelId: 'tiny',
      }),
      {
        dataDir,
        readyTimeoutMs: 60_000,
        ...(options.bind === undefined ? {} : { bind: options.bind }),
        ...(options.wrap === undefined ? {} : { wrap: options.wrap }),
        onStderr: (line) => stderr.push(line),
        onExit: (exit) => {
          ready.value = false;
          exits.push(exit);
        },
      },
    );
  } catch (error) {
    dir.cleanup();
    throw error;
  }
  ready.value = true;
  const token = randomBytes(32).toString('base64url');
  const requests: FrontDoorRequestEvent[] = [];
  const admission = createAdmission({
    maxConcurrent: options.maxConcurrent ?? 4,
    maxQueue: 16,
    queueTimeoutMs: 30_000,
    ready: true,
  });
  let door: FrontDoor;
  try {
    door = await startFrontDoor({
      verifyToken: createTokenVerifier(token),
      upstream: () => (ready.value ? handle.address : null),
      admission,
      onRequest: (event) => requests.push(event),
      ...(options.limits === undefined ? {} : { limits: options.limits }),
    });
  } catch (error) {
    await handle.stop(2000);
    dir.cleanup();
    throw error;
  }
  const openai = new OpenAI({ baseURL: `${door.url}/v1`, apiKey: token, maxRetries: 0, timeout: 30_000 });
  let closed = false;
  return {
    handle,
    door,
    token,
    openai,
    requests,
    stderr,
    exits,
    ready,
    dataDir,
    async close() {
      if (closed) return;
      closed = true;
      await door.close();
      await handle.stop(2000);
      dir.cleanup();
    },
  };
}
