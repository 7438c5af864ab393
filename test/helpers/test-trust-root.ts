// A sigstore trust root of the test's own — a CA, a CT log and a transparency log, each its own P-256 key — and
// keyless signatures made under it as cosign makes them: a short-lived certificate naming the signer (SAN) and the
// OIDC issuer (Fulcio's extension), with an embedded SCT (RFC 6962 §3.2), and a hashedrekord entry with its signed
// entry timestamp. Nothing here verifies anything: sluice verifies with @sigstore/verify.
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { payloadFor } from './cosign.js';

// ─── DER, just what certificates need ─────────────────────────────────────────────────────────────────────────
const cat = (xs: Buffer[]): Buffer => Buffer.concat(xs);
function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag: number, content: Buffer): Buffer => cat([Buffer.from([tag]), len(content.length), content]);
const seq = (...xs: Buffer[]): Buffer => tlv(0x30, cat(xs));
const set = (...xs: Buffer[]): Buffer => tlv(0x31, cat(xs));
const int = (n: number): Buffer => {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (bytes.length === 0 || (bytes[0] ?? 0) & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
};
function oid(s: string): Buffer {
  const [a = 0, b = 0, ...rest] = s.split('.').map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const chunk: number[] = [];
    for (let v = n; ; v = Math.floor(v / 128)) {
      chunk.unshift((v % 128) | (chunk.length > 0 ? 0x80 : 0));
      if (v < 128) break;
    }
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s));
const octet = (b: Buffer): Buffer => tlv(0x04, b);
const bits = (b: Buffer, unused = 0): Buffer => tlv(0x03, cat([Buffer.from([unused]), b]));
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const utcTime = (d: Date): Buffer => tlv(0x17, Buffer.from(`${d.toISOString().slice(2, 19).replace(/[-:T]/g, '')}Z`));
const explicit = (n: number, content: Buffer): Buffer => tlv(0xa0 + n, content);
const name = (cn: string): Buffer => seq(set(seq(oid('2.5.4.3'), utf8(cn))));
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));
const extension = (id: string, critical: boolean, value: Buffer): Buffer => seq(oid(id), ...(critical ? [bool(true)] : []), octet(value));
const spki = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });

function tbs(serial: number, issuer: string, subject: string, notBefore: Date, notAfter: Date, key: KeyObject, extensions: Buffer[]): Buffer {
  return seq(explicit(0, int(2)), int(serial), ECDSA_SHA256, name(issuer), seq(utcTime(notBefore), utcTime(notAfter)), name(subject), spki(key), explicit(3, seq(...extensions)));
}
const certificate = (tbsDer: Buffer, issuerKey: KeyObject): Buffer => seq(tbsDer, ECDSA_SHA256, bits(sign('sha256', tbsDer, issuerKey)));
const pem = (der: Buffer): string => `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
const sha = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

/** JSON with sorted keys and no spaces (Rekor's canonical form for these flat documents). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

interface Pair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}
const pair = (): Pair => generateKeyPairSync('ec', { namedCurve: 'P-256' });

export interface KeylessIdentity {
  /** An email (rfc822Name) or a URI (a CI workflow), as Fulcio puts it in the SAN. */
  subject: string;
  issuer: string;
}

export class TestTrustRoot {
  private readonly ca = pair();
  private readonly ct = pair();
  private readonly rekor = pair();
  private readonly caDer: Buffer;
  private serial = 10;
  private logIndex = 0;

  constructor(private readonly now = new Date()) {
    const from = new Date(now.getTime() - 86_400_000);
    const to = new Date(now.getTime() + 365 * 86_400_000);
    const caTbs = tbs(1, 'sluice test CA', 'sluice test CA', from, to, this.ca.publicKey, [
      extension('2.5.29.19', true, seq(bool(true))),
      extension('2.5.29.15', true, bits(Buffer.from([0x06]), 1)),
    ]);
    this.caDer = certificate(caTbs, this.ca.privateKey);
  }

  /** The trusted_root.json an operator would carry across (sigstore's TrustedRoot, JSON form). */
  json(): string {
    const log = (k: Pair, url: string): unknown => ({
      baseUrl: url, hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: spki(k.publicKey).toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: '2020-01-01T00:00:00Z' } },
      logId: { keyId: sha(spki(k.publicKey)).toString('base64') },
    });
    return JSON.stringify({
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      tlogs: [log(this.rekor, 'https://rekor.test')],
      certificateAuthorities: [{ subject: { organization: 'sluice test', commonName: 'sluice test CA' }, uri: 'https://fulcio.test', certChain: { certificates: [{ rawBytes: this.caDer.toString('base64') }] }, validFor: { start: '2020-01-01T00:00:00Z' } }],
      ctlogs: [log(this.ct, 'https://ct.test')],
      timestampAuthorities: [],
    });
  }

  /** A short-lived signing certificate for `who`, with an SCT of this root's CT log embedded. */
  private issue(who: KeylessIdentity, key: KeyObject): Buffer {
    const notBefore = new Date(this.now.getTime() - 60_000);
    const notAfter = new Date(this.now.getTime() + 600_000);
    const san = who.subject.includes('@') && !who.subject.includes('://') ? tlv(0x81, Buffer.from(who.subject)) : tlv(0x86, Buffer.from(who.subject));
    const extensions = [
      extension('2.5.29.15', true, bits(Buffer.from([0x80]), 7)),
      extension('2.5.29.17', true, seq(san)),
      extension('1.3.6.1.4.1.57264.1.1', false, Buffer.from(who.issuer)),
    ];
    const serial = this.serial++;
    const pre = tbs(serial, 'sluice test CA', '', notBefore, notAfter, key, extensions);
    const timestamp = Buffer.alloc(8);
    timestamp.writeBigUInt64BE(BigInt(this.now.getTime()));
    const signed = cat([Buffer.from([0, 0]), timestamp, u16(1), sha(spki(this.ca.publicKey)), u24(pre.length), pre, u16(0)]);
    const sig = sign('sha256', signed, this.ct.privateKey);
    const sct = cat([Buffer.from([0]), sha(spki(this.ct.publicKey)), timestamp, u16(0), Buffer.from([4, 3]), u16(sig.length), sig]);
    const list = cat([u16(sct.length + 2), u16(sct.length), sct]);
    const final = tbs(serial, 'sluice test CA', '', notBefore, notAfter, key, [...extensions, extension('1.3.6.1.4.1.11129.2.4.2', false, octet(list))]);
    return certificate(final, this.ca.privateKey);
  }

  /**
   * A cosign legacy `.sig` layer signed keyless by `who`: the payload, and the annotations cosign writes
   * (signature, certificate, Rekor bundle).
   */
  legacyLayer(who: KeylessIdentity, ref: string, digest: string): { payload: Buffer; annotations: Record<string, string> } {
    const key = pair();
    const cert = pem(this.issue(who, key.publicKey));
    const payload = payloadFor(ref, digest);
    const signature = sign('sha256', payload, key.privateKey).toString('base64');
    const body = Buffer.from(canonical({
      apiVersion: '0.0.1', kind: 'hashedrekord',
      spec: { data: { hash: { algorithm: 'sha256', value: sha(payload).toString('hex') } }, signature: { content: signature, publicKey: { content: Buffer.from(cert).toString('base64') } } },
    }));
    const integratedTime = Math.floor(this.now.getTime() / 1000);
    const logID = sha(spki(this.rekor.publicKey)).toString('hex');
    const logIndex = this.logIndex++;
    const set_ = sign('sha256', Buffer.from(canonical({ body: body.toString('base64'), integratedTime, logID, logIndex })), this.rekor.privateKey);
    const rekorBundle = { SignedEntryTimestamp: set_.toString('base64'), Payload: { body: body.toString('base64'), integratedTime, logIndex, logID } };
    return {
      payload,
      annotations: {
        'dev.cosignproject.cosign/signature': signature,
        'dev.sigstore.cosign/certificate': cert,
        'dev.sigstore.cosign/chain': pem(this.caDer),
        'dev.sigstore.cosign/bundle': JSON.stringify(rekorBundle),
      },
    };
  }
}
