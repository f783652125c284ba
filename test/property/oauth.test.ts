// Property tests for the OAuth core: any callback URL that differs from the valid one in state, iss or
// parameter duplication is refused; any callback at all either validates or fails with an ERR_OAUTH_*
// code; the text surfaced from the hub is always printable and never holds a hidden value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isValidatedCallback, sanitizeOAuthText } from '../../src/core/oauth.js';
import { CompanionError } from '../../src/core/errors.js';
import { CODE, ISSUER, signIn } from '../helpers/oauth-fixtures.js';

const fixture = signIn();

function outcome(url: URL | string): string {
  try {
    const callback = fixture.validate(url);
    assert.ok(isValidatedCallback(callback));
    return 'validated';
  } catch (error) {
    if (!(error instanceof CompanionError)) throw error;
    return error.code;
  }
}

type Mutation =
  | { kind: 'state-set'; value: string }
  | { kind: 'state-delete' }
  | { kind: 'iss-set'; value: string }
  | { kind: 'iss-delete' }
  | { kind: 'duplicate'; name: string; value: string; front: boolean };

const anyText = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.constantFrom(ISSUER, `${ISSUER}/`, 'https://HUB.test', fixture.state, ` ${fixture.state}`, `${fixture.state}=`),
);

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  anyText.filter((v) => v !== fixture.state).map((value) => ({ kind: 'state-set' as const, value })),
  fc.constant({ kind: 'state-delete' as const }),
  anyText.filter((v) => v !== ISSUER).map((value) => ({ kind: 'iss-set' as const, value })),
  fc.constant({ kind: 'iss-delete' as const }),
  fc.record({
    kind: fc.constant('duplicate' as const),
    name: fc.oneof(
      fc.constantFrom('code', 'state', 'iss', 'error', 'scope'),
      fc.string({ minLength: 1, maxLength: 10 }),
    ),
    value: fc.oneof(anyText, fc.constantFrom(CODE)),
    front: fc.boolean(),
  }),
);

function apply(mutations: readonly Mutation[]): URL {
  const url = new URL(fixture.callbackUrl);
  const p = url.searchParams;
  for (const m of mutations) {
    switch (m.kind) {
      case 'state-set':
        p.set('state', m.value);
        break;
      case 'state-delete':
        p.delete('state');
        break;
      case 'iss-set':
        p.set('iss', m.value);
        break;
      case 'iss-delete':
        p.delete('iss');
        break;
      case 'duplicate': {
        // Make sure the name is there twice, whether or not an earlier mutation removed it.
        const entries = [...p.entries()];
        const present = entries.some(([n]) => n === m.name);
        const extra: [string, string][] = present
          ? [[m.name, m.value]]
          : [
              [m.name, m.value],
              [m.name, m.value],
            ];
        const next = m.front ? [...extra, ...entries] : [...entries, ...extra];
        url.search = new URLSearchParams(next).toString();
        break;
      }
    }
  }
  return url;
}

const REFUSALS = new Set([
  'ERR_OAUTH_STATE_MISMATCH',
  'ERR_OAUTH_ISSUER_MISSING',
  'ERR_OAUTH_ISSUER_MISMATCH',
  'ERR_OAUTH_DUPLICATE_PARAM',
]);

test('the unmutated callback validates (so every refusal below is due to the mutation)', () => {
  assert.equal(outcome(fixture.callbackUrl), 'validated');
});

test('validateAuthorizationResponse() refuses any callback that differs from the valid one in state, iss or duplication', () => {
  fc.assert(
    fc.property(fc.array(mutationArb, { minLength: 1, maxLength: 3 }), (mutations) => {
      const url = apply(mutations);
      const code = outcome(url);
      assert.ok(REFUSALS.has(code), `${code} for ${url.search}`);
      // The first failing check decides the code: duplication, then iss, then state.
      const names = [...url.searchParams.keys()];
      if (new Set(names).size !== names.length) assert.equal(code, 'ERR_OAUTH_DUPLICATE_PARAM');
      else if (!url.searchParams.get('iss')) assert.equal(code, 'ERR_OAUTH_ISSUER_MISSING');
      else if (url.searchParams.get('iss') !== ISSUER) assert.equal(code, 'ERR_OAUTH_ISSUER_MISMATCH');
      else assert.equal(code, 'ERR_OAUTH_STATE_MISMATCH');
    }),
    { numRuns: 2000 },
  );
});

test('validateAuthorizationResponse() answers any callback query with a validated result or an ERR_OAUTH_* code', () => {
  const name = fc.oneof(
    fc.constantFrom('code', 'state', 'iss', 'error', 'error_description', 'id_token', 'session_state'),
    fc.string({ maxLength: 8 }),
  );
  const value = fc.oneof(
    fc.constantFrom(CODE, fixture.state, ISSUER, ''),
    fc.string({ unit: 'binary', maxLength: 40 }),
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(name, value), { maxLength: 8 }), fc.boolean(), (pairs, startValid) => {
      const url = new URL(fixture.redirectUri);
      url.search = new URLSearchParams([
        ...(startValid ? [...fixture.callbackUrl.searchParams] : []),
        ...pairs,
      ]).toString();
      const code = outcome(url);
      if (code === 'validated') {
        // Only a callback with exactly one correct state and iss, a code and no error can pass.
        const p = url.searchParams;
        assert.deepEqual(p.getAll('state'), [fixture.state]);
        assert.deepEqual(p.getAll('iss'), [ISSUER]);
        assert.equal(p.getAll('code').length, 1);
        assert.ok(p.get('code'));
        assert.equal(p.has('error'), false);
      } else {
        assert.match(code, /^ERR_OAUTH_/);
      }
    }),
    { numRuns: 2000 },
  );
});

test('sanitizeOAuthText() always returns printable RFC 6749 characters, bounded, without the hidden value', () => {
  const secret = fc.string({ unit: 'binary', minLength: 1, maxLength: 40 });
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary', maxLength: 300 }),
      secret,
      fc.integer({ min: 1, max: 200 }),
      fc.nat(300),
      (text, hidden, max, at) => {
        const i = at % (text.length + 1);
        const input = `${text.slice(0, i)}${hidden}${text.slice(i)}`;
        const out = sanitizeOAuthText(input, max, [hidden]);
        assert.match(out, /^[\x20\x21\x23-\x5B\x5D-\x7E]*$/);
        assert.ok(out.length <= Math.max(max + 3, '[redacted]'.length));
        const shownSecret = hidden.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, '?');
        assert.ok(!out.includes(shownSecret), JSON.stringify({ out, shownSecret }));
      },
    ),
    { numRuns: 2000 },
  );
});
