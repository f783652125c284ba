/**
 * The hub's own TLS: a local CA and two server certificates signed by it, one for the hub origin and
 * one for the model host origin. Keys are ECDSA P-256 made with node's WebCrypto; certificates are built
 * with @peculiar/x509. Nothing here turns verification off: clients trust `caPem` explicitly.
 */
import './reflect-metadata.js';
import * as x509 from '@peculiar/x509';
import { createHash, createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { CompanionError } from '../core/errors.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

/** A PEM certificate and its PKCS#8 PEM private key. */
export interface CertificateAndKey {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface HubTlsMaterial {
  /** The CA certificate every client trusts. */
  readonly ca: CertificateAndKey;
  /** Server certificate of the hub origin: SAN IP 127.0.0.1 and DNS localhost. */
  readonly hub: CertificateAndKey;
  /** Server certificate of the model host origin: SAN IP 127.0.0.1 and DNS model-host.localhost. */
  readonly modelHost: CertificateAndKey;
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f; // a positive INTEGER
  if (bytes[0] === 0) bytes[0] = 1;
  return Buffer.from(bytes).toString('hex');
}

async function newKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as Promise<webcrypto.CryptoKeyPair>;
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** Makes a new CA certificate valid for `days` days. */
export async function createCa(days = 825): Promise<CertificateAndKey> {
  const keys = await newKeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=Companion reference hub local CA ${randomSerial().slice(0, 8)}, O=Companion (development only)`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + days * DAY_MS),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await pkcs8Pem(keys.privateKey) };
}

/**
 * Checks that a stored CA is usable: a CA certificate, its key matches, and it is valid for at least
 * another day. Returns false for anything else (the caller then makes a new one).
 */
export function isUsableCa(ca: CertificateAndKey, now = Date.now()): boolean {
  try {
    const cert = new X509Certificate(ca.certPem);
    const key = createPrivateKey(ca.keyPem);
    return (
      cert.ca &&
      cert.checkPrivateKey(key) &&
      Date.parse(cert.validTo) - now > DAY_MS &&
      Date.parse(cert.validFrom) <= now
    );
  } catch {
    return false;
  }
}

async function issueServerCert(
  ca: CertificateAndKey,
  commonName: string,
  names: x509.JsonGeneralNames,
  days: number,
): Promise<CertificateAndKey> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(ca.keyPem), ALG, false, [
    'sign',
  ]);
  const keys = await newKeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${commonName}, O=Companion (development only)`,
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + days * DAY_MS),
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await pkcs8Pem(keys.privateKey) };
}

/** A loopback server certificate valid 30 days: for 127.0.0.1 and one DNS name. */
function loopbackServerCert(ca: CertificateAndKey, commonName: string, dnsName: string): Promise<CertificateAndKey> {
  return issueServerCert(
    ca,
    commonName,
    [
      { type: 'ip', value: '127.0.0.1' },
      { type: 'dns', value: dnsName },
    ],
    30,
  );
}

/**
 * The TLS material of one hub start: the given CA (or a new one) and fresh server certificates for the
 * hub and the model host, valid 30 days.
 * @throws ERR_CONFIG when the given CA is not usable.
 */
export async function createHubTls(existingCa?: CertificateAndKey): Promise<HubTlsMaterial> {
  if (existingCa !== undefined && !isUsableCa(existingCa))
    throw new CompanionError('ERR_CONFIG', 'the stored hub CA is not usable');
  const ca = existingCa ?? (await createCa());
  const [hub, modelHost] = await Promise.all([
    loopbackServerCert(ca, 'Companion reference hub', 'localhost'),
    loopbackServerCert(ca, 'Companion reference model host', 'model-host.localhost'),
  ]);
  return { ca, hub, modelHost };
}

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo (what Chromium's SPKI pin list takes). */
export function spkiSha256Base64(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}
