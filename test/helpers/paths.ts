// Paths of the repository seen from the compiled tests (dist/test/...).
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

/** The repository root (the folder holding package.json). */
export const repoRoot = resolve(fileURLToPath(new URL('../../../', import.meta.url)));
/** The compiled tree (dist/). */
export const distRoot = resolve(repoRoot, 'dist');
