/**
 * The bundled runtime's command line. Only non-secret settings travel on argv (it is world-readable in
 * /proc/<pid>/cmdline); the loopback-TCP key comes over stdin (see main.ts).
 *
 *   --model PATH            GGUF file to load (this or --model-fd is required)
 *   --model-fd N            load the model from inherited descriptor N (the companion's way: the model's
 *                           path never appears on argv, and the sandbox need not show the file)
 *   --socket PATH | --tcp   bind a Unix socket at PATH (mode 0600, its directory must be 0700) or 127.0.0.1:0
 *   --context N             context size in tokens (default 2048)
 *   --threads N             CPU threads (default: physical cores)
 *   --gpu off|auto          GPU use (default off)
 *   --parallel N            sequences generating at once (default 1; more requests wait in a queue)
 *   --model-id NAME         the id reported by /v1/models and in responses (default "local")
 *   --shutdown-grace-ms N   how long SIGTERM lets in-flight generations finish before cancelling them
 */
import { CompanionError } from '../core/errors.js';

export interface RuntimeServerConfig {
  readonly modelPath: string;
  readonly bind: { readonly kind: 'unix'; readonly path: string } | { readonly kind: 'tcp' };
  readonly contextSize: number;
  /** `undefined` means "physical cores" (resolved in main.ts, which may read /proc). */
  readonly threads: number | undefined;
  readonly gpu: 'off' | 'auto';
  readonly parallel: number;
  readonly modelId: string;
  readonly shutdownGraceMs: number;
}

const MODEL_ID = /^[A-Za-z0-9._:/-]{1,128}$/;

function usage(message: string): CompanionError {
  return new CompanionError('ERR_USAGE', message);
}

function integer(name: string, raw: string | undefined, min: number, max: number): number {
  if (raw === undefined || !/^\d{1,9}$/.test(raw)) throw usage(`${name} needs an integer`);
  const value = Number(raw);
  if (value < min || value > max) throw usage(`${name} must be from ${min} to ${max}`);
  return value;
}

/**
 * Parses the runtime's argv (without `node` and the script). Throws `ERR_USAGE` on anything unknown,
 * repeated or missing; the message names the flag, never a value.
 */
export function parseRuntimeArgs(argv: readonly string[]): RuntimeServerConfig {
  let modelPath: string | undefined;
  let socket: string | undefined;
  let tcp = false;
  let contextSize = 2048;
  let threads: number | undefined;
  let gpu: 'off' | 'auto' = 'off';
  let parallel = 1;
  let modelId = 'local';
  let shutdownGraceMs = 1000;
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (seen.has(flag)) throw usage(`${flag} given twice`);
    seen.add(flag);
    const value = (): string => {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw usage(`${flag} needs a value`);
      i++;
      return next;
    };
    switch (flag) {
      case '--model': modelPath = value(); break;
      case '--model-fd': modelPath = `/proc/self/fd/${integer(flag, value(), 3, 1023)}`; break;
      case '--socket': socket = value(); break;
      case '--tcp': tcp = true; break;
      case '--context': contextSize = integer(flag, value(), 64, 1 << 20); break;
      case '--threads': threads = integer(flag, value(), 1, 1024); break;
      case '--gpu': {
        const mode = value();
        if (mode !== 'off' && mode !== 'auto') throw usage('--gpu must be off or auto');
        gpu = mode;
        break;
      }
      case '--parallel': parallel = integer(flag, value(), 1, 64); break;
      case '--model-id': {
        modelId = value();
        if (!MODEL_ID.test(modelId)) throw usage('--model-id has characters outside [A-Za-z0-9._:/-]');
        break;
      }
      case '--shutdown-grace-ms': shutdownGraceMs = integer(flag, value(), 0, 600_000); break;
      default: throw usage(`unknown argument ${flag.startsWith('--') ? flag : '(a value without a flag)'}`);
    }
  }
  if (seen.has('--model') && seen.has('--model-fd')) throw usage('--model and --model-fd exclude each other');
  if (modelPath === undefined) throw usage('--model or --model-fd is required');
  if (!modelPath.startsWith('/') && !/^[A-Za-z]:[\\/]/.test(modelPath)) throw usage('--model must be an absolute path');
  if ((socket === undefined) === !tcp) throw usage('give exactly one of --socket PATH or --tcp');
  if (socket !== undefined && !socket.startsWith('/')) throw usage('--socket must be an absolute path');
  return {
    modelPath,
    bind: socket !== undefined ? { kind: 'unix', path: socket } : { kind: 'tcp' },
    contextSize,
    threads,
    gpu,
    parallel,
    modelId,
    shutdownGraceMs,
  };
}
