/**
 * The runtime sandbox in use, as `companion doctor` reports it (CONTRACT §6: `"none"` if none).
 * Placeholder until the sandbox issue lands and replaces this function.
 */
export async function detectSandboxMode(): Promise<string> {
  return 'none';
}
