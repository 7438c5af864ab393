#!/usr/bin/env node
// Process entry for the `sluice` command: runs the CLI and exits with its code.
import { runCli } from './cli/cli.js';

runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`sluice: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
