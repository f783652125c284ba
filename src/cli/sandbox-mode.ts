/**
 * The sandbox line of `companion doctor` (issue 10): which runtime sandbox a start would use.
 */
import { detectSandbox, type DetectSandboxOptions } from '../runtime/sandbox.js';

/**
 * The mode name a runtime start would use on this machine: `'bubblewrap'`, `'unshare'` (partial: no
 * network, files visible; a start needs --allow-unsandboxed), `'sandbox-exec'`, or `'none'`. Proves the
 * mode with one sandboxed run (cached, bounded by a timeout); never rejects on a missing tool.
 */
export async function detectSandboxMode(options: DetectSandboxOptions = {}): Promise<string> {
  return (await detectSandbox(options)).mode;
}
