/**
 * Shared access signature (SAS) tokens for DPS and IoT Hub, and the key derivation of group
 * enrollments. Pure functions over a CryptoPort: the caller passes the expiry, computed from a
 * clock by `sasExpiry`, so no function here reads the time.
 *
 *   SharedAccessSignature sr={resource}&sig={url-encoded base64 HMAC}&se={expiry}[&skn={key name}]
 *   signature = base64(HMAC-SHA256(base64-decode(key), "{sr as written}\n{se}"))
 */
import type { CryptoPort } from "./crypto.js";
import { base64Decode, base64Encode, urlEncode, utf8Encode } from "./encoding.js";
import { check, UsageError } from "./errors.js";
import { hubTokenResource } from "./hub-protocol.js";

/** 2020-01-01T00:00:00Z: a clock earlier than this has not been set (no NTP yet). */
export const EARLIEST_PLAUSIBLE_TIME_MS = 1_577_836_800_000;

/** How `sr` is written in a DPS token (both are accepted by the service, docs/PROTOCOL.md). */
export type ResourceForm =
  /** `0neFEEDC0DE/registrations/dev1`, with `skn=registration` (the Node SDK's form). */
  | "raw"
  /** `0neFEEDC0DE%2fregistrations%2fdev1`, lowercase escapes, no `skn` (the Embedded C SDK's form). */
  | "encoded";

/**
 * The expiry (`se`, seconds since 1970) of a token signed now and valid for `lifetimeSeconds`.
 * @throws UsageError CLOCK_NOT_SET when `nowMs` is before 2020: a token signed with an unset
 *   clock is already expired, the most common provisioning failure in the field.
 */
export function sasExpiry(nowMs: number, lifetimeSeconds: number): number {
  check(Number.isFinite(lifetimeSeconds) && lifetimeSeconds >= 60, `token lifetime must be at least 60 s, got ${lifetimeSeconds}`);
  if (!Number.isFinite(nowMs) || nowMs < EARLIEST_PLAUSIBLE_TIME_MS) {
    throw new UsageError(
      "CLOCK_NOT_SET",
      `the clock reads ${Number.isFinite(nowMs) ? new Date(nowMs).toISOString() : String(nowMs)}, before 2020: set it (NTP) before signing a SAS token`,
    );
  }
  return Math.floor(nowMs / 1000) + Math.floor(lifetimeSeconds);
}

/** The signature of `stringToSign` under a base64 key, as base64 (not yet URL-encoded). */
export function sasSignature(crypto: CryptoPort, keyBase64: string, stringToSign: string): string {
  const key = base64Decode(keyBase64, "the symmetric key");
  check(key.length > 0, "the symmetric key is empty");
  const mac = crypto.hmacSha256(key, utf8Encode(stringToSign));
  key.fill(0);
  return base64Encode(mac);
}

/** Builds a token from the resource exactly as it will be written in `sr=`. */
export function sasToken(crypto: CryptoPort, srAsWritten: string, keyBase64: string, expiry: number, keyName?: string): string {
  check(Number.isInteger(expiry) && expiry > 0, `token expiry must be a positive integer of seconds, got ${expiry}`);
  const sig = urlEncode(sasSignature(crypto, keyBase64, `${srAsWritten}\n${expiry}`));
  return `SharedAccessSignature sr=${srAsWritten}&sig=${sig}&se=${expiry}` + (keyName ? `&skn=${urlEncode(keyName)}` : "");
}

export interface DpsSasOptions {
  readonly idScope: string;
  readonly registrationId: string;
  /** The device's symmetric key (base64): individual, or derived from a group key. */
  readonly symmetricKey: string;
  /** `se`, from `sasExpiry`. */
  readonly expiry: number;
  /** Default "raw". */
  readonly resourceForm?: ResourceForm;
}

/** The SAS token a device presents to DPS (the MQTT password and the lookup's Authorization). */
export function dpsSasToken(crypto: CryptoPort, options: DpsSasOptions): string {
  checkIdScope(options.idScope);
  checkRegistrationId(options.registrationId);
  const resource = `${options.idScope}/registrations/${options.registrationId}`;
  if ((options.resourceForm ?? "raw") === "raw") {
    return sasToken(crypto, resource, options.symmetricKey, options.expiry, "registration");
  }
  return sasToken(crypto, lowercaseEscapes(urlEncode(resource)), options.symmetricKey, options.expiry);
}

export interface HubSasOptions {
  /** The assigned hub's host name, e.g. `contoso.azure-devices.net`. */
  readonly hubHost: string;
  readonly deviceId: string;
  readonly symmetricKey: string;
  readonly expiry: number;
}

/**
 * The SAS token a device presents to its IoT Hub, byte for byte the official Node client's: `sr`
 * strictly URL-encoded (`hubTokenResource`: `! ' ( ) *` escaped too), no key name.
 */
export function hubSasToken(crypto: CryptoPort, options: HubSasOptions): string {
  check(options.hubHost.length > 0, "hubHost must not be empty");
  check(options.deviceId.length > 0, "deviceId must not be empty");
  return sasToken(crypto, hubTokenResource(options.hubHost, options.deviceId), options.symmetricKey, options.expiry);
}

/**
 * The device key of a group enrollment: base64(HMAC-SHA256(base64-decode(group key), registration
 * id)). A device that presents the group key itself gets 401.
 */
export function deriveDeviceKey(crypto: CryptoPort, groupKeyBase64: string, registrationId: string): string {
  checkRegistrationId(registrationId);
  return sasSignature(crypto, groupKeyBase64, registrationId);
}

/**
 * DPS registration ids: up to 128 characters, lowercase alphanumerics and `-._:`, starting and
 * ending with an alphanumeric (Azure's documented rule; uppercase is accepted by the service and
 * folded, so it is allowed here).
 * @throws UsageError INVALID_ARGUMENT naming the rule that failed.
 */
export function checkRegistrationId(registrationId: string): void {
  if (typeof registrationId !== "string" || registrationId.length === 0 || registrationId.length > 128) {
    throw new UsageError("INVALID_ARGUMENT", "registrationId must be 1 to 128 characters");
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9\-._:]*$/.test(registrationId) || !/[A-Za-z0-9]$/.test(registrationId)) {
    throw new UsageError(
      "INVALID_ARGUMENT",
      `registrationId "${registrationId.slice(0, 128)}" may hold only letters, digits and - . _ : and must start and end with a letter or digit`,
    );
  }
}

/** ID scopes look like `0ne00000000`: letters and digits only. */
export function checkIdScope(idScope: string): void {
  if (typeof idScope !== "string" || !/^[A-Za-z0-9]{1,64}$/.test(idScope)) {
    throw new UsageError("INVALID_ARGUMENT", `idScope "${String(idScope).slice(0, 64)}" must be letters and digits, as shown in the DPS overview`);
  }
}

function lowercaseEscapes(text: string): string {
  return text.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase());
}
