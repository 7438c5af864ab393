// Run after tsc by `npm run build`: writes dist/build-info.json (version and source revision), which
// `sluice version` reads; a release writes its own copy from the commit it is built from.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildInfo, REPO_ROOT } from './source.js';

writeFileSync(join(REPO_ROOT, 'dist', 'build-info.json'), `${JSON.stringify(buildInfo())}\n`);
