/** `companion status`: sign-in, model, runtime, availability and resources. Never a token. */
import { checkInstalledModel, readInstalled } from '../shell/install.js';
import { endpointHealthy, readDiscovery, readJsonFile, type PublishedState } from '../shell/discovery.js';
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
    '"companionAvailable", "resources": {...}|null, "endpoint": URL|null, ...}.',
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
      const discovery = await readDiscovery(context.paths.discovery);
      const published = discovery === null ? null : await readJsonFile<PublishedState>(context.paths.state);
      const healthy = discovery !== null && token !== null ? await endpointHealthy(discovery.url, token) : false;
      const report = {
        signedIn,
        user,
        expiresAt,
        keychain,
        model: installed === null ? null : { id: installed.id, verified },
        runtime: published?.runtime ?? null,
        companionAvailable: verified && published?.companionAvailable === true && healthy,
        resources: published?.resources ?? null,
        endpoint: discovery?.url ?? null,
        sandbox: published?.sandbox ?? null,
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
        io.out(`Endpoint:   ${report.endpoint ?? '-'}`);
      }
      return 0;
    } finally {
      await context.close();
    }
  },
};
