// P-b with a real browser: headless Debian Chromium loads a page from ANOTHER origin (a small server on
// 127.0.0.1, another port) that knows the front door's URL and even its token, and tries every way a web
// page has to reach it: simple no-cors fetches (with and without a Referer), a text/plain POST, a CORS GET,
// a preflighted POST with Authorization and a JSON body, and an auto-submitted form post. The front door
// records each request it saw with its refusal code (so the browser did send them), nothing reaches the
// instrumented runtime behind it, no answer carries a CORS header, and the page reads nothing.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FrontDoorRequestEvent } from '../../src/runtime/front-door.js';
import { chromiumPresent, launchChromium, type LaunchedChromium } from '../helpers/browser.js';
import { startFrontDoorFixture, type FrontDoorFixture } from '../helpers/front-door.js';
import { gate } from '../helpers/gate.js';
import { waitFor } from '../helpers/runtime-env.js';

type Attack = 'simple' | 'preflight' | 'form';

function attackPage(kind: Attack, door: string, token: string): string {
  const body = JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }] });
  const script = `
    const door = ${JSON.stringify(door)};
    const token = ${JSON.stringify(token)};
    const body = ${JSON.stringify(body)};
    const results = {};
    async function attempt(name, run) {
      try { const r = await run(); results[name] = { type: r.type, status: r.status, text: r.type === 'opaque' ? '' : await r.text() }; }
      catch (e) { results[name] = { error: e.name }; }
    }
    (async () => {
      if (${JSON.stringify(kind)} === 'simple') {
        await attempt('noCorsGet', () => fetch(door + '/v1/models', { mode: 'no-cors' }));
        await attempt('noCorsGetNoReferrer', () => fetch(door + '/v1/models', { mode: 'no-cors', referrerPolicy: 'no-referrer' }));
        await attempt('textPost', () => fetch(door + '/v1/chat/completions', { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body }));
        await attempt('corsGet', () => fetch(door + '/v1/models'));
      } else if (${JSON.stringify(kind)} === 'preflight') {
        await attempt('preflighted', () => fetch(door + '/v1/chat/completions', { method: 'POST', headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' }, body }));
      } else {
        document.getElementById('attack').submit();
      }
      window.attackResults = results;
    })();`;
  // A text/plain form whose single field spells a JSON body (the classic cross-site JSON POST trick).
  const form =
    `<form id="attack" method="POST" enctype="text/plain" target="sink" action="${door}/v1/chat/completions">` +
    `<input type="hidden" name='{"model":"tiny","messages":[{"role":"user","content":"hi"}],"pad":"' value='"}'></form>` +
    '<iframe name="sink"></iframe>';
  return `<!doctype html><html><head><meta charset="utf-8"><title>another origin</title></head><body>${form}<script>${script}</script></body></html>`;
}

describe(
  'P-b the front door against pages of another origin in headless Chromium',
  gate('chromium', chromiumPresent, 'apt-get install chromium'),
  () => {
    let fixture: FrontDoorFixture;
    let browser: LaunchedChromium;
    let site: Server;
    let siteUrl = '';
    const seen: FrontDoorRequestEvent[] = [];
    const corsHeaders: string[] = [];

    before(async () => {
      fixture = await startFrontDoorFixture({ door: { onRequest: (event) => seen.push(event) } });
      site = createServer((req, res) => {
        const kind = (req.url ?? '').slice(1) as Attack;
        if (!['simple', 'preflight', 'form'].includes(kind)) {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(attackPage(kind, fixture.door.url, fixture.token));
      });
      await new Promise<void>((resolve) => site.listen({ host: '127.0.0.1', port: 0, exclusive: true }, resolve));
      siteUrl = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
      assert.notEqual(siteUrl, fixture.door.url, 'the page is on another origin');
      browser = await launchChromium();
      browser.context.on('response', (response) => {
        if (!response.url().startsWith(fixture.door.url)) return;
        for (const name of Object.keys(response.headers()))
          if (name.startsWith('access-control-')) corsHeaders.push(name);
      });
    });

    after(async () => {
      await browser?.close();
      site?.closeAllConnections();
      await new Promise<void>((resolve) => (site ? site.close(() => resolve()) : resolve()));
      await fixture?.close();
    });

    /** Loads the attack page, waits until the front door has seen `expected` requests, returns them and the page's results. */
    async function run(
      kind: Attack,
      expected: number,
    ): Promise<{
      events: FrontDoorRequestEvent[];
      results: Record<string, { type?: string; status?: number; text?: string; error?: string }>;
    }> {
      const from = seen.length;
      const page = await browser.context.newPage();
      try {
        await page.goto(`${siteUrl}/${kind}`);
        await waitFor(() => seen.length - from >= expected, 10_000, `${expected} request(s) at the front door`);
        const results =
          kind === 'form'
            ? {}
            : await page
                .waitForFunction('window.attackResults', undefined, { timeout: 10_000 })
                .then(
                  (h) =>
                    h.jsonValue() as Promise<
                      Record<string, { type?: string; status?: number; text?: string; error?: string }>
                    >,
                );
        // Give a stray extra request (a retry, a second navigation) the chance to show up before counting.
        await new Promise((resolve) => setTimeout(resolve, 100));
        return { events: seen.slice(from), results };
      } finally {
        await page.close();
      }
    }

    test('P-b simple cross-origin requests (no-cors GETs with and without Referer, a text/plain POST, a CORS GET) are refused and the runtime sees nothing', async () => {
      const { events, results } = await run('simple', 4);
      assert.deepEqual(
        events.map((e) => [e.method, e.status, e.code]),
        [
          // No Origin on a no-cors GET: the Referer names the other origin.
          ['GET', 403, 'ERR_GUARD_REFERER'],
          // No Origin and no Referer: Sec-Fetch-Site says the request is not same-origin.
          ['GET', 403, 'ERR_GUARD_FETCH_SITE'],
          ['POST', 403, 'ERR_GUARD_ORIGIN'],
          ['GET', 403, 'ERR_GUARD_ORIGIN'],
        ],
      );
      // The page reads nothing: `Cross-Origin-Resource-Policy: same-origin` makes Chromium turn even the
      // opaque no-cors answers into network errors, and the CORS GET has no Access-Control-Allow-Origin.
      assert.deepEqual(results, {
        noCorsGet: { error: 'TypeError' },
        noCorsGetNoReferrer: { error: 'TypeError' },
        textPost: { error: 'TypeError' },
        corsGet: { error: 'TypeError' },
      });
      assert.equal(fixture.upstream.seen.length, 0);
      assert.deepEqual(corsHeaders, []);
    });

    test('P-b a preflighted fetch with the token and a JSON body dies at the refused preflight; the POST is never sent', async () => {
      const { events, results } = await run('preflight', 1);
      assert.deepEqual(
        events.map((e) => [e.method, e.status, e.code]),
        [['OPTIONS', 403, 'ERR_GUARD_ORIGIN']],
      );
      assert.deepEqual(results.preflighted, { error: 'TypeError' });
      assert.equal(fixture.upstream.seen.length, 0);
      assert.deepEqual(corsHeaders, []);
    });

    test('P-b an auto-submitted cross-origin form post (text/plain spelling JSON) is refused and the runtime sees nothing', async () => {
      const { events } = await run('form', 1);
      assert.deepEqual(
        events.map((e) => [e.method, e.status, e.code]),
        [['POST', 403, 'ERR_GUARD_ORIGIN']],
      );
      assert.equal(fixture.upstream.seen.length, 0);
      assert.deepEqual(corsHeaders, []);
    });
  },
);
