// `sluice signing init [--key FILE]`: writes the site key pair (private key mode 0600, public key beside it as
// FILE.pub) and prints the public key — what `sluice talos patch --verify` puts in the nodes' ImageVerificationConfig.
import type { Config } from '../config/config.js';
import { SiteKeyError, writeSiteKey } from '../jobs/site-key.js';
import { flag, UsageError, type ParsedArgs } from './args.js';
import { err, out } from './commands.js';

export async function signingCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  const [sub, ...rest] = args.positionals;
  if (sub !== 'init') throw new UsageError(sub === undefined ? 'signing needs a subcommand: init' : `unknown signing subcommand "${sub}"`);
  if (rest.length > 0) throw new UsageError('signing init takes no arguments');
  const file = flag(args, 'key') ?? config().signing?.key;
  if (file === undefined) throw new UsageError('give --key FILE, or set signing.key in the config');
  try {
    const key = await writeSiteKey(file);
    err(`wrote ${file} (private, mode 0600) and ${file}.pub; key id ${key.id}`);
    out(key.publicKeyPem);
    return 0;
  } catch (e) {
    if (!(e instanceof SiteKeyError)) throw e;
    err(`sluice signing init: ${e.message}`);
    return 1;
  }
}
