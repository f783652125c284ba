/**
 * `companion status`: sign-in, model, runtime, availability and resources. Never a token. The health
 * check, the one request that carries the token, goes only to an endpoint that passed the identity check
 * and the attestation (P-k).
 */
import { checkInstalledModel, readInstalled } from '../shell/install.js';
import { endpointHealthy, readDiscovery, readPublishedState, verifyEndpoint } from '../shell/discovery.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext } from './context.js';

export const statusCommand: Command = {
  name: 'status',
  summary: 'show sign-in, model, runtime and availability (never a token)',
  help: [
    'Usage: companion status [--json]',
    '',
    'Shows who is signed in and until when, the installed model and whether it still matches what was',
    'verified, the runtime\'s state, pid and resources (RSS, CPU, VRAM), and whether the companion is',
    'available now (checked with a health round trip through the endpoint).',
    'With --json: {"signedIn", "model": {"id","verified"}|null, "runtime": {"state","pid"}|null,',
    '"companionAvailable", "resources": {...}|null, "endpoint": URL|null, ...}. When the recorded endpoint fails',
    'the attestation, "endpoint" is null and "endpointError" is "ERR_ENDPOINT_UNVERIFIED".',
    '',
    'Options:',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args);
    const context = await createContext(parsed, io);
    try {
      let signedIn = false;
      let user: string | null = null;
      let expiresAt: string | null = null;
      let keychain = 'unknown';
      let token: string | null = null;
      if (context.config.hub !== null) {
        const authority = authorityFor(context, io);
        try {
          const state = await authority.state();
          signedIn = state.signedIn;
          user = state.subject ?? null;
          expiresAt = state.expiresAt === null ? null : new Date(state.expiresAt).toISOString();
          keychain = 'available';
          token = (await authority.loopbackToken())?.reveal() ?? null;
        } catch (error) {
          keychain = (error as { code?: string }).code ?? 'ERR_KEYCHAIN_FAILURE';
        }
      }
      const installed = await readInstalled(context.paths.models);
      let verified = false;
      if (installed !== null) verified = await checkInstalledModel(context.paths.models).then(() => true, () => false);
      // Identity first (a stale record is "not running"), then the attestation before the token is used.
      const discovery = await readDiscovery(context.paths.discovery);
      const published = discovery === null ? null : await readPublishedState(context.paths.state, discovery.pid);
      const check = discovery !== null && token !== null ? await verifyEndpoint(discovery, token) : null;
      const healthy = check?.ok === true && token !== null ? await endpointHealthy(check.endpoint, token) : false;
      const endpointError = check !== null && !check.ok && check.code === 'ERR_ENDPOINT_UNVERIFIED' ? check.code : null;
      const report = {
        signedIn,
        user,
        expiresAt,
        keychain,
        model: installed === null ? null : { id: installed.id, verified },
        runtime: published?.runtime ?? null,
        companionAvailable: verified && published?.companionAvailable === true && healthy,
        resources: published?.resources ?? null,
        // Without a token only the identity check vouches for the URL; with one, the attestation must too.
        endpoint: discovery === null || endpointError !== null ? null : discovery.url,
        sandbox: published?.sandbox ?? null,
        ...(endpointError !== null ? { endpointError } : {}),
      };
      if (context.json) {
        context.emit(report);
      } else {
        io.out(`Signed in:  ${signedIn ? `yes${user ? ` as ${user}` : ''}${expiresAt ? ` (access until ${expiresAt})` : ''}` : `no${keychain !== 'available' && context.config.hub !== null ? ` (keychain: ${keychain})` : ''}`}`);
        io.out(`Model:      ${installed === null ? 'none (run companion pull)' : `${installed.id} (${verified ? 'verified' : 'CHANGED since verification: pull again'})`}`);
        io.out(`Runtime:    ${report.runtime === null ? 'not running (run companion up)' : `${report.runtime.state}, pid ${report.runtime.pid ?? '-'}, sandbox ${report.sandbox ?? '-'}`}`);
        const r = report.resources as { rssBytes?: number; cpuPercent?: number | null; vram?: unknown } | null;
        if (r !== null) io.out(`Resources:  RSS ${((r.rssBytes ?? 0) / (1 << 20)).toFixed(0)} MiB, CPU ${r.cpuPercent ?? '-'}%, VRAM ${r.vram === null || r.vram === undefined ? 'n/a' : JSON.stringify(r.vram)}`);
        io.out(`Available:  ${report.companionAvailable ? 'yes' : 'no'}`);
        io.out(`Endpoint:   ${report.endpoint ?? (endpointError !== null ? `- (the recorded endpoint failed the attestation: ${endpointError}; restart companion up)` : '-')}`);
      }
      return 0;
    } finally {
      await context.close();
    }
  },
};
