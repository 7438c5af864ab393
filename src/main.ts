#!/usr/bin/env node
// Process entry for the `sluice` command: runs the CLI and exits with its code. The CLI runs as bundled by
// `npm run build` (src/release/cli-bundle.ts: dist/bundle/cli/, a few files instead of some 400 modules, bench case 5).
import type { runCli as RunCli } from './cli/cli.js';

const BUNDLE = new URL('../bundle/cli/cli.mjs', import.meta.url);

const cli = (await import(BUNDLE.href).catch((e: unknown) => {
  throw new Error(`${BUNDLE.pathname} cannot be loaded (npm run build makes it): ${e instanceof Error ? e.message : String(e)}`);
})) as { runCli: typeof RunCli };

cli.runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`sluice: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
