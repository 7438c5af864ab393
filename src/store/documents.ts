// The state documents (allowlist, denied log, manual window) for a CLI command that works without a running
// server: beside the store on fs, or in the shared database. One database connection pool per process.
import type { PostgresConfig } from '../config/config.js';
import { fsStateDocuments } from './fs/state.js';
import type { StateDocuments } from './ports.js';

const opened = new Map<string, Promise<StateDocuments>>();

export function stateDocuments(cfg: { storage: string; postgres?: PostgresConfig }): Promise<StateDocuments> {
  if (!cfg.postgres) return Promise.resolve(fsStateDocuments(cfg.storage));
  const c = cfg.postgres;
  const key = JSON.stringify(c);
  let docs = opened.get(key);
  if (!docs) {
    docs = import('./pg/metadata.js').then(({ PgMetadataStore }) => PgMetadataStore.open(c, { listen: false })).then((m) => m.state);
    opened.set(key, docs);
  }
  return docs;
}
