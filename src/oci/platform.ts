// Which platform an index entry is for, and whether a platform filter (`os/arch[/variant]`) wants it: the one rule
// sync, coverage, export, import and Talos caches apply, so what is fetched is what is counted and carried.
import { MANIFEST_MEDIA_TYPES, type Descriptor } from './manifest.js';

/** `os/arch[/variant]` of an index entry, or undefined when it names no os or no architecture. */
export function platformOf(d: Descriptor): string | undefined {
  const p = d.platform;
  if (typeof p?.os !== 'string' || typeof p.architecture !== 'string' || p.os === '' || p.architecture === '') return undefined;
  return typeof p.variant === 'string' && p.variant !== '' ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/**
 * Whether a walk under a platform filter follows `d`. No filter (absent or empty) wants everything. Only manifests
 * are filtered: a config or layer is always wanted. A manifest that names no os/arch (no `platform`, or
 * `platform: {}`) is not platform-specific, so it is wanted too — a filter drops only what it can tell apart. A
 * wanted `os/arch` also takes its variants (`linux/arm64` wants `linux/arm64/v8`); `os/arch/variant` only that one.
 */
export function platformWanted(d: Descriptor, platforms: readonly string[] | undefined): boolean {
  if (!platforms || platforms.length === 0 || !MANIFEST_MEDIA_TYPES.includes(d.mediaType)) return true;
  const full = platformOf(d);
  if (full === undefined) return true;
  const short = full.split('/').slice(0, 2).join('/');
  return platforms.some((want) => want === full || want === short);
}
