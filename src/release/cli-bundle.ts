// `npm run build`'s last step: the CLI compiled by tsc (dist/src/cli/cli.js) and the packages it loads at start
// (fastify, yaml, pino, lowdb…) as a few files in dist/bundle/cli/, which dist/src/main.js runs. One file to read
// and compile instead of some 400 modules to resolve, stat and load is most of what `sluice serve` spent starting
// (bench case 5). Each command handler stays its own chunk, loaded when its command runs. dist/bundle/cli/ sits as
// deep as dist/src/cli/, so paths made from import.meta.url (the default config, build-info.json) are the same.
import { join } from 'node:path';
import { build } from 'rolldown';
import { REPO_ROOT } from './source.js';

/**
 * Kept out of the bundle, as packages in node_modules: those loaded only by some configs or commands, or through
 * createRequire at run time (prom-client, fastify's compilers), loaded when first needed as
 * test/component/start-up-imports.test.ts checks; and the native addons (their `.node` files cannot be bundled).
 */
export const LOADED_LATER: RegExp[] = [
  /^sluice-sendfile($|\/)/,
  /^@aws-sdk\//, /^@smithy\//, /^pg($|\/)/, /^@sigstore\//, /^tar-stream($|\/)/, /^zstd-napi($|\/)/, /^bcryptjs($|\/)/,
  /^undici($|\/)/, /^prom-client($|\/)/, /^ajv($|\/)/, /^@fastify\/ajv-compiler($|\/)/, /^@fastify\/fast-json-stringify-compiler($|\/)/,
];

await build({
  input: join(REPO_ROOT, 'dist', 'src', 'cli', 'cli.js'),
  platform: 'node',
  external: LOADED_LATER,
  logLevel: 'warn',
  output: {
    dir: join(REPO_ROOT, 'dist', 'bundle', 'cli'),
    format: 'esm',
    entryFileNames: '[name].mjs',
    chunkFileNames: '[name]-[hash].mjs',
    cleanDir: true,
  },
});
