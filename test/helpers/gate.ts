// Dependency gates for tiers that need something outside the project (gnome-keyring, chromium, bwrap).
// Missing dependency: the tests are skipped and say why, unless COMPANION_REQUIRE_ALL=1, when a failing
// test is registered instead, so CI cannot pass with a tier that did not really run.
import { test } from 'node:test';
import assert from 'node:assert/strict';

export const requireAll = process.env.COMPANION_REQUIRE_ALL === '1';

/**
 * Returns test options that skip when `present` is false. Under COMPANION_REQUIRE_ALL=1 a missing
 * dependency also registers one failing test naming it.
 */
export function gate(name: string, present: boolean, howToInstall = ''): { skip?: string } {
  if (present) return {};
  const reason = `${name} is missing${howToInstall ? ` (${howToInstall})` : ''}`;
  if (requireAll) {
    test(`dependency ${name} is present (COMPANION_REQUIRE_ALL=1)`, () => {
      assert.fail(reason);
    });
  }
  return { skip: reason };
}
