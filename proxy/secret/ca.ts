/**
 * The per-run certificate authority of `--secret`: an ECDSA P-256 key that lives only in this
 * process's memory, a self-signed CA certificate the guest trusts for that run, and leaf
 * certificates for the secrets' hosts, made on first use and cached.
 *
 * The CA certificate is short-lived and name-constrained by nothing but its use: shuru only
 * presents leaves for hosts that carry a secret, and the guest's trust in it ends with the run
 * (it sits on a tmpfs, never on the disk a checkpoint saves).
 *
 * @module
 */

import * as x509 from "@peculiar/x509";
import { isIpv4 } from "../wire/address.ts";

/** Key and certificate chain for a TLS server, in PEM (what `node:tls` takes). */
export interface TlsIdentity {
  /** PKCS#8 private key. */
  keyPem: string;
  /** The leaf certificate followed by the CA's. */
  certPem: string;
}

/** Options of {@linkcode CertificateAuthority.create}. */
export interface CertificateAuthorityOptions {
  /** Start of validity (default: now). Backdated an hour for guests whose clock lags. */
  now?: Date;
  /** How long the CA and its leaves are valid, in days (default 30). */
  validDays?: number;
  /** Most leaves kept (default 256); the oldest is dropped and made again on demand. */
  maxLeaves?: number;
  /** The CA's common name (default `shuru run CA` and a random tag). */
  commonName?: string;
}

const EC_KEY = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** X.520 upper bound of a common name. */
const MAX_COMMON_NAME = 64;

/**
 * A certificate serial number (hex) from 16 random bytes: a positive INTEGER whose DER encoding
 * is minimal, as RFC 5280 §4.1.2.2 requires. The first byte is 0x40-0x7f: 0x00 followed by a
 * byte below 0x80 would be a padded INTEGER, which OpenSSL refuses to read ("illegal
 * padding"), so about one certificate in 256 would be unreadable; 0x80 and up would be negative.
 */
export function certificateSerial(random: Uint8Array): string {
  const bytes = random.slice(0, 16);
  bytes[0] = 0x40 | (bytes[0]! & 0x3f);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomSerial(): string {
  return certificateSerial(crypto.getRandomValues(new Uint8Array(16)));
}

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key));
  const b64 = der.toBase64().replace(/.{64}/g, "$&\n");
  return `-----BEGIN PRIVATE KEY-----\n${b64.trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

/** A CA made for one run; its private key cannot be exported. */
export class CertificateAuthority {
  /** The CA certificate in PEM: what the guest adds to its trust store. */
  readonly certificatePem: string;
  readonly #cert: x509.X509Certificate;
  readonly #key: CryptoKey;
  readonly #notBefore: Date;
  readonly #notAfter: Date;
  readonly #maxLeaves: number;
  readonly #leaves = new Map<string, Promise<TlsIdentity>>();

  private constructor(
    cert: x509.X509Certificate,
    key: CryptoKey,
    validity: { notBefore: Date; notAfter: Date },
    maxLeaves: number,
  ) {
    this.#cert = cert;
    this.#key = key;
    this.#notBefore = validity.notBefore;
    this.#notAfter = validity.notAfter;
    this.#maxLeaves = maxLeaves;
    this.certificatePem = cert.toString("pem") + "\n";
  }

  /** Makes a new CA (about 25 ms). */
  static async create(options: CertificateAuthorityOptions = {}): Promise<CertificateAuthority> {
    const now = options.now ?? new Date();
    const notBefore = new Date(now.getTime() - HOUR_MS);
    const notAfter = new Date(now.getTime() + (options.validDays ?? 30) * DAY_MS);
    // Not extractable: the private key never leaves this object.
    const keys = await crypto.subtle.generateKey(EC_KEY, false, ["sign", "verify"]);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `CN=${options.commonName ?? `shuru run CA ${randomSerial().slice(0, 8)}`}, O=shuru`,
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new CertificateAuthority(
      cert,
      keys.privateKey,
      { notBefore, notAfter },
      options.maxLeaves ?? 256,
    );
  }

  /** The key and chain to present as `name` (a DNS name or an IPv4 address). */
  leaf(name: string): Promise<TlsIdentity> {
    const key = name.toLowerCase();
    let identity = this.#leaves.get(key);
    if (identity === undefined) {
      if (this.#leaves.size >= this.#maxLeaves) {
        this.#leaves.delete(this.#leaves.keys().next().value!);
      }
      identity = this.#makeLeaf(key);
      this.#leaves.set(key, identity);
      identity.catch(() => this.#leaves.delete(key));
    }
    return identity;
  }

  async #makeLeaf(name: string): Promise<TlsIdentity> {
    const keys = await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: name.length <= MAX_COMMON_NAME ? `CN=${name}` : "CN=shuru secret host",
      issuer: this.#cert.subject,
      notBefore: this.#notBefore,
      notAfter: this.#notAfter,
      publicKey: keys.publicKey,
      signingKey: this.#key,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          { type: isIpv4(name) ? "ip" : "dns", value: name },
        ]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert),
      ],
    });
    return {
      keyPem: await pkcs8Pem(keys.privateKey),
      certPem: cert.toString("pem") + "\n" + this.certificatePem,
    };
  }
}
