/**
 * A scripted user agent for the reference hub's own sign-in and consent pages: the demo plays the
 * browser's part with it (and says so), following the hub's redirects, filling in the dev login and
 * answering the consent form, until a redirect leaves the hub (the loopback callback), which it then
 * delivers to the companion's redirect listener like a browser would.
 *
 * It knows only this reference hub's forms; a real hub is used through the system browser.
 */
import { request } from 'node:http';
import { CompanionError } from '../core/errors.js';

export interface DevBrowserOptions {
  readonly authorizationUrl: string;
  /** A fetch that trusts the hub's CA (verification stays on). */
  readonly fetch: typeof globalThis.fetch;
  readonly user: string;
  readonly password: string;
  readonly consent?: 'allow' | 'deny';
}

class Jar {
  readonly #cookies = new Map<string, string>();

  store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const pair = line.split(';')[0] ?? '';
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = /max-age=0|expires=thu, 01 jan 1970/i.test(line);
      if (value === '' || expired) this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }

  header(): string | undefined {
    return this.#cookies.size === 0 ? undefined : [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

function field(html: string, pattern: RegExp): string {
  const match = pattern.exec(html);
  if (match === null)
    throw new CompanionError(
      'ERR_OAUTH_AUTHORIZATION_DENIED',
      'the hub page is not the expected sign-in or consent form',
    );
  return match[1]!.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code))).replace(/&amp;/g, '&');
}

/** Delivers the callback to the loopback listener (plain http on 127.0.0.1, as a browser would). */
function deliver(location: URL): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(location, { method: 'GET', timeout: 10_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/**
 * Walks the authorization URL through the hub's pages and delivers the final redirect to the loopback
 * listener. Resolves with the listener's HTTP status.
 * @throws ERR_OAUTH_REDIRECT_URI when the hub redirects anywhere but the loopback listener over http;
 *   ERR_OAUTH_AUTHORIZATION_DENIED when a page is neither the sign-in nor the consent form, or after 20 steps
 */
export async function completeSignInAsDevUser(options: DevBrowserOptions): Promise<number> {
  const jar = new Jar();
  let url = new URL(options.authorizationUrl);
  const origin = url.origin;
  let method: 'GET' | 'POST' = 'GET';
  let body: string | undefined;
  for (let step = 0; step < 20; step += 1) {
    const headers: Record<string, string> = { accept: 'text/html' };
    const cookie = jar.header();
    if (cookie !== undefined) headers.cookie = cookie;
    if (method === 'POST') {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers.origin = origin;
      headers['sec-fetch-site'] = 'same-origin';
    }
    const response = await options.fetch(url, {
      method,
      headers,
      redirect: 'manual',
      ...(body === undefined ? {} : { body }),
    });
    jar.store(response);
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      const location = new URL(response.headers.get('location') ?? '', url);
      if (location.origin !== origin) {
        // Leaving the hub: only ever to the loopback listener.
        if (location.protocol !== 'http:' || location.hostname !== '127.0.0.1')
          throw new CompanionError('ERR_OAUTH_REDIRECT_URI');
        return deliver(location);
      }
      url = location;
      method = 'GET';
      body = undefined;
      continue;
    }
    const html = await response.text();
    const action = new URL(field(html, /<form method="post" action="([^"]+)"/), origin);
    const csrf = field(html, /name="csrf" value="([^"]+)"/);
    if (response.status === 200 && html.includes('id="sign-in"')) {
      body = new URLSearchParams({
        csrf,
        username: options.user,
        password: options.password,
        action: 'login',
      }).toString();
    } else if (response.status === 200 && html.includes('id="allow"')) {
      body = new URLSearchParams({ csrf, action: options.consent ?? 'allow' }).toString();
    } else {
      throw new CompanionError('ERR_OAUTH_AUTHORIZATION_DENIED', `the hub answered ${response.status} during sign-in`);
    }
    url = action;
    method = 'POST';
  }
  throw new CompanionError('ERR_OAUTH_AUTHORIZATION_DENIED', 'too many steps in the sign-in');
}
