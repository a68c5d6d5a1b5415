// Shared access signature tokens as DPS and IoT Hub check them, written from the service's side.
//
//   SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdevice-1&sig=Qx...%3D&se=1700000000&skn=registration
//
// The HMAC is computed over `sr` exactly as the token carries it (raw or URL-encoded, either case of
// the %2f escapes), and the decoded `sr` is compared separately with the resource the request is
// about. Secrets never leave this module in an error: failures are reasons, not values.
import { createHmac, timingSafeEqual } from "node:crypto";

export interface SasToken {
  /** `sr` as written in the token (the HMAC input). */
  readonly sr: string;
  /** `sr` URL-decoded: the resource the token claims. */
  readonly resource: string;
  /** The signature bytes (URL-decoded, then base64-decoded). */
  readonly signature: Buffer;
  /** Expiry in seconds since the epoch. */
  readonly se: number;
  /** `se` as written (the HMAC input). */
  readonly seText: string;
  /** Key name, decoded, when present. */
  readonly skn: string | undefined;
}

export type SasFailure =
  | "missing-token"
  | "malformed-token"
  | "wrong-resource"
  | "wrong-key-name"
  | "expired"
  | "bad-signature";

const PREFIX = "SharedAccessSignature ";

/**
 * Parses a token; returns the failure reason instead of throwing (a bad token is the peer's
 * doing, not ours).
 */
export function parseSasToken(text: string | Buffer | undefined | null): SasToken | SasFailure {
  if (text === undefined || text === null || text.length === 0) return "missing-token";
  const s = typeof text === "string" ? text : text.toString("utf8");
  if (!s.startsWith(PREFIX)) return "malformed-token";
  let sr: string | undefined;
  let sig: string | undefined;
  let se: string | undefined;
  let skn: string | undefined;
  for (const part of s.slice(PREFIX.length).split("&")) {
    const eq = part.indexOf("=");
    if (eq <= 0) return "malformed-token";
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (key === "sr") sr = value;
    else if (key === "sig") sig = value;
    else if (key === "se") se = value;
    else if (key === "skn") skn = value;
    else return "malformed-token";
  }
  if (!sr || !sig || !se || !/^[0-9]{1,12}$/.test(se)) return "malformed-token";
  let resource: string;
  let signatureText: string;
  let keyName: string | undefined;
  try {
    resource = decodeURIComponent(sr);
    signatureText = decodeURIComponent(sig);
    keyName = skn === undefined ? undefined : decodeURIComponent(skn);
  } catch {
    return "malformed-token"; // an invalid %-escape
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(signatureText)) return "malformed-token";
  const signature = Buffer.from(signatureText, "base64");
  if (signature.length !== 32) return "malformed-token";
  return { sr, resource, signature, se: Number(se), seText: se, skn: keyName };
}

export interface SasExpectation {
  /** The decoded resource the token must name, e.g. `0ne00000001/registrations/device-1`. */
  readonly resource: string;
  /**
   * Compare the host (before the first '/') ignoring case, as DNS does; the rest, device ids
   * included, is compared exactly (IoT Hub device ids are case-sensitive).
   */
  readonly hostIgnoreCase?: boolean;
  /** `undefined`: skn must be absent or anything; a string: when present, skn must equal it; `null`: skn must be absent. */
  readonly keyName?: string | null;
  readonly nowMs: number;
  readonly skewSeconds: number;
}

/** Checks everything but the signature: resource, key name, expiry. */
export function checkSasClaims(token: SasToken, expect: SasExpectation): SasFailure | undefined {
  let resourceMatches = token.resource === expect.resource;
  if (!resourceMatches && expect.hostIgnoreCase) {
    const a = token.resource.indexOf("/");
    const b = expect.resource.indexOf("/");
    resourceMatches = a > 0 && a === b && token.resource.slice(a) === expect.resource.slice(b) && token.resource.slice(0, a).toLowerCase() === expect.resource.slice(0, b).toLowerCase();
  }
  if (!resourceMatches) return "wrong-resource";
  if (expect.keyName === null && token.skn !== undefined) return "wrong-key-name";
  if (typeof expect.keyName === "string" && token.skn !== undefined && token.skn !== expect.keyName) return "wrong-key-name";
  if ((token.se + expect.skewSeconds) * 1000 < expect.nowMs) return "expired";
  return undefined;
}

/** True when `key` (raw bytes) signed this token. */
export function signatureMatches(token: SasToken, key: Buffer): boolean {
  const mac = createHmac("sha256", key).update(token.sr + "\n" + token.seText).digest();
  return timingSafeEqual(mac, token.signature);
}

/** The device key of a group enrollment member: HMAC-SHA256(group key, UTF-8 registration id). */
export function deriveDeviceKey(groupKey: Buffer, registrationId: string): Buffer {
  return createHmac("sha256", groupKey).update(registrationId, "utf8").digest();
}

/** Decodes a base64 symmetric key; throws a TypeError naming the field when it is not base64. */
export function decodeKey(base64: string, what: string): Buffer {
  if (typeof base64 !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) {
    throw new TypeError(`${what} must be a base64 string`);
  }
  const key = Buffer.from(base64, "base64");
  if (key.length < 16) throw new TypeError(`${what} must decode to at least 16 bytes`);
  return key;
}

/**
 * Builds a token the way a client does (for tests and the benchmark): `encodeResource` chooses
 * the Embedded C form (URL-encoded `sr`, lowercase %2f) over the Node form (raw `sr`).
 */
export function signSasToken(options: {
  resource: string;
  key: Buffer;
  expirySeconds: number;
  keyName?: string;
  encodeResource?: boolean;
}): string {
  const sr = options.encodeResource ? encodeURIComponent(options.resource).replace(/%2F/g, "%2f") : options.resource;
  const se = String(options.expirySeconds);
  const sig = createHmac("sha256", options.key).update(sr + "\n" + se).digest("base64");
  let token = `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
  if (options.keyName !== undefined) token += `&skn=${encodeURIComponent(options.keyName)}`;
  return token;
}
