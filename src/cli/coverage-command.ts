// `sluice status --coverage [--json]`: the readiness report of every rule, from the running server or, without
// one, from the store files. Exit 1 when anything allowed is incomplete, so a script can gate on it.
import { coverageReport, type CoverageReport, type ImageCoverage, type RuleCoverage } from '../jobs/coverage.js';
import { ruleTexts } from '../admin/status.js';
import type { Config } from '../config/config.js';
import { SiteSigner } from '../jobs/site-signer.js';
import { Store } from '../store/store.js';
import type { ParsedArgs } from './args.js';
import { isJson, liveOrOffline, openAllowlist, out, openStore } from './commands.js';
import { formatBytes } from './commands.js';

export async function coverageCommand(args: ParsedArgs, cfg: Config): Promise<number> {
  const report = await liveOrOffline(
    cfg,
    (c) => c.json<CoverageReport>('GET', '/api/v1/coverage'),
    async () => {
      const [store, allowlist] = await Promise.all([openStore(cfg), openAllowlist(cfg)]);
      try {
        const signer = cfg.signing ? await SiteSigner.open(store, cfg.signing) : undefined;
        return await coverageReport(store, ruleTexts(allowlist), { platforms: cfg.platforms, signer });
      } finally {
        allowlist.close();
        await store.close();
      }
    },
  );
  if (isJson(args)) out(JSON.stringify(report, null, 2));
  else out(describeCoverage(report));
  return report.ready ? 0 : 1;
}

const MARK: Record<RuleCoverage['state'], string> = { complete: 'ok', incomplete: 'INCOMPLETE', missing: 'MISSING', empty: 'no match' };
const short = (digest: string | null): string => (digest ? digest.slice(0, 19) : '-');

export function describeCoverage(r: CoverageReport): string {
  const lines: string[] = [];
  for (const rule of r.rules) {
    lines.push(`${MARK[rule.state].padEnd(10)}  ${rule.rule}`);
    if (rule.kind === 'tag' || rule.kind === 'digest') {
      for (const image of rule.images) lines.push(...imageLines(image, undefined));
      continue;
    }
    // A glob may match thousands: count them, detail only what is incomplete.
    const bad = rule.images.filter((i) => i.state !== 'complete');
    lines.push(`            ${rule.images.length} image(s) matched${rule.images.length ? `, ${bad.length ? `${bad.length} incomplete` : 'all complete'}` : ''}`);
    for (const image of bad) lines.push(...imageLines(image, `${image.name}:${image.reference}`));
  }
  const s = r.summary;
  const expect = r.platforms === 'all' ? 'every platform of each index' : r.platforms.join(', ');
  lines.push(`${s.rules} rule(s): ${s.complete} complete, ${s.incomplete} incomplete, ${s.missing} missing, ${s.empty} matching nothing (platforms expected: ${expect})`);
  lines.push(r.ready ? 'ready: everything the allowlist names is stored' : 'NOT READY: run `sluice sync` in a window, then check again');
  return lines.join('\n');
}

function imageLines(i: ImageCoverage, label: string | undefined): string[] {
  const pad = '            ';
  const head = label ? `${pad}${i.state.padEnd(10)}  ${label} ` : pad;
  const lines = [`${head}${i.digest ? `${short(i.digest)}… ${i.storedBlobs} blob(s), ${formatBytes(i.storedBytes)}` : 'tag not stored'}`];
  const p = i.platforms;
  if (p) {
    lines.push(`${pad}  platforms: ${p.present.length}/${p.expected.length} present${p.missing.length ? `; missing ${p.missing.join(', ')}` : ''}${p.notInIndex.length ? `; not in the index: ${p.notInIndex.join(', ')}` : ''}`);
  }
  if (i.missingManifests.length) lines.push(`${pad}  missing manifests: ${i.missingManifests.join(', ')}`);
  if (i.missingBlobs.length) lines.push(`${pad}  missing blobs: ${i.missingBlobs.join(', ')}`);
  if (i.digest) lines.push(`${pad}  signatures: ${i.signatures.tags.length} tag(s), ${i.signatures.referrers.length} referrer(s)`);
  for (const s of i.siteSignatures ?? []) {
    lines.push(s.signed ? `${pad}  site-signed ${short(s.digest)}… (${s.policy}: ${s.verified})` : `${pad}  NOT SITE-SIGNED ${short(s.digest)}…: ${s.reason ?? ''}`);
  }
  return lines;
}
