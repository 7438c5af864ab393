// `sluice talos patch`: reads what the config says about the registry listener (TLS, mTLS, basic auth) and the
// files the operator names, checks them, and prints the machine-config patch talos-patch.ts renders.
import { readFileSync } from 'node:fs';
import { flag, UsageError, type ParsedArgs } from './args.js';
import type { Config } from '../config/config.js';
import { Htpasswd } from '../http/listener.js';
import { loadSiteKey, SiteKeyError } from '../jobs/site-key.js';
import { lastCertificate, PatchInputError, renderPatch, type PatchForm, type PatchInput } from './talos-patch.js';

export async function talosCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  const [sub, ...rest] = args.positionals;
  if (sub !== 'patch') throw new UsageError(sub === undefined ? 'talos needs a subcommand: patch' : `unknown talos subcommand "${sub}"`);
  if (rest.length > 0) throw new UsageError('talos patch takes no arguments');
  const form = flag(args, 'form') ?? 'documents';
  if (form !== 'legacy' && form !== 'documents') throw new UsageError(`--form must be legacy or documents, not "${form}"`);
  const cfg = config();
  const input = await patchInput(args, cfg);
  try {
    process.stdout.write(renderPatch(form as PatchForm, input));
  } catch (e) {
    if (e instanceof PatchInputError) throw new UsageError(e.message);
    throw e;
  }
  return 0;
}

async function patchInput(args: ParsedArgs, cfg: Config): Promise<PatchInput> {
  const endpoint = endpointOf(flag(args, 'endpoint'), cfg);
  const input: PatchInput = { endpoint };
  const https = endpoint.protocol === 'https:';
  if (https) input.caPem = caPem(flag(args, 'ca'), cfg);
  const cert = flag(args, 'client-cert');
  const key = flag(args, 'client-key');
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('give --client-cert and --client-key together');
  if (cfg.tls?.clientCA && cert === undefined) {
    throw new UsageError(`mTLS is on (tls.clientCA ${cfg.tls.clientCA}): give the node's --client-cert FILE and --client-key FILE, signed by that CA`);
  }
  if (cert !== undefined && key !== undefined) input.clientIdentity = { certPem: readPem(cert, '--client-cert'), keyPem: readPem(key, '--client-key') };
  const username = flag(args, 'username');
  const passwordFile = flag(args, 'password-file');
  if ((username === undefined) !== (passwordFile === undefined)) throw new UsageError('give --username and --password-file together');
  if (cfg.auth && username === undefined) {
    throw new UsageError(`basic auth is on (auth.htpasswd ${cfg.auth.htpasswd}): give --username USER and --password-file FILE for the nodes`);
  }
  if (args.flags.get('verify') === true) input.verifyPublicKeyPem = await sitePublicKey(cfg);
  if (username !== undefined && passwordFile !== undefined) {
    const password = readText(passwordFile, '--password-file').replace(/\r?\n$/, '');
    if (cfg.auth) await checkCredentials(cfg.auth.htpasswd, username, password);
    input.auth = { username, password };
  }
  return input;
}

/** The site key's public half, for the nodes' ImageVerificationConfig. */
async function sitePublicKey(cfg: Config): Promise<string> {
  if (!cfg.signing) throw new UsageError(`--verify needs signing configured in ${cfg.file} (signing: { key: ./site.key }; sluice signing init writes it)`);
  try {
    return (await loadSiteKey(cfg.signing.key)).publicKeyPem;
  } catch (e) {
    throw e instanceof SiteKeyError ? new UsageError(e.message) : e;
  }
}

/** `--endpoint`, else the listen address with the scheme TLS implies; a wildcard address is no address for a node. */
function endpointOf(given: string | undefined, cfg: Config): URL {
  if (given !== undefined) {
    try {
      return new URL(given);
    } catch {
      throw new UsageError(`--endpoint "${given}" is not a URL (e.g. https://sluice.lan:6000)`);
    }
  }
  const { host, port } = cfg.listen;
  const scheme = cfg.tls ? 'https' : 'http';
  if (host === '0.0.0.0' || host === '::') {
    throw new UsageError(`listen is ${host}:${port}, which is no address a node can dial: give --endpoint ${scheme}://HOST:${port} (the name or address nodes reach sluice at${cfg.tls ? ', as in its certificate' : ''})`);
  }
  return new URL(`${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`);
}

/** The CA the nodes trust: --ca, else the top certificate of tls.cert (self-signed, or the end of its chain). */
function caPem(file: string | undefined, cfg: Config): string {
  const source = file ?? cfg.tls?.cert;
  if (source === undefined) throw new UsageError('the endpoint is https but sluice has no tls in its config: give --ca FILE (the CA that signed its certificate)');
  const pem = lastCertificate(readText(source, file === undefined ? 'tls.cert' : '--ca'));
  if (!pem) throw new UsageError(`${source} holds no PEM certificate`);
  return pem;
}

async function checkCredentials(htpasswdFile: string, username: string, password: string): Promise<void> {
  let table: Htpasswd;
  try {
    table = Htpasswd.load(htpasswdFile);
  } catch (e) {
    throw new UsageError(`auth.htpasswd: ${(e as Error).message}`);
  }
  const header = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  await table.check(header).catch(() => {
    throw new UsageError(`user "${username}" with that password is not in ${htpasswdFile}: the nodes would be refused (add it with htpasswd -B ${htpasswdFile} ${username})`);
  });
}

function readPem(file: string, what: string): string {
  const text = readText(file, what);
  if (!/-----BEGIN [A-Z ]+-----/.test(text)) throw new UsageError(`${what} ${file} is not a PEM file`);
  return text;
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`${what} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
