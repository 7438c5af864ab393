// Node's compile cache for `serve`: the compiled code of sluice and its dependencies is kept in
// `<storage>/node-compile-cache/`, so a restart skips most of the parsing and compiling of some 700 modules.
// Node ≥ 22.1 only; on Node 20 this does nothing. NODE_COMPILE_CACHE (another folder) and
// NODE_DISABLE_COMPILE_CACHE=1 are Node's own and take precedence.
import module from 'node:module';
import { join } from 'node:path';

/** What `node:module` offers from Node 22.1 (enable) and 22.10 (flush); absent on Node 20. */
interface CompileCacheApi {
  enableCompileCache?: (dir?: string) => { status: number; message?: string; directory?: string };
  flushCompileCache?: () => void;
}

const api = module as CompileCacheApi;

/** Beside the store, in the folder the operator gave sluice to write in; safe to delete at any time. */
export function compileCacheDir(storage: string): string {
  return join(storage, 'node-compile-cache');
}

/**
 * Turns the cache on for every module loaded from now on. A folder Node cannot write is no error: the start is
 * only slower (Node reports it in the returned status, which nothing needs).
 */
export function enableCompileCache(storage: string): void {
  api.enableCompileCache?.(compileCacheDir(storage));
}

/** Writes what was compiled so far (Node would at exit only, which a killed server never reaches). */
export function flushCompileCache(): void {
  api.flushCompileCache?.();
}
