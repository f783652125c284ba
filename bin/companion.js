#!/usr/bin/env node
// The `companion` command. The program is compiled TypeScript under dist/; `npm run build` makes it.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('companion: not built yet; run `npm run build` (npm start and npm test build first)\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
