/**
 * Errors are values with a stable code, a side (whose fault it is) and a message a person can
 * act on. Two kinds, as in the sans-I/O libraries: `UsageError` is the caller's mistake (a bad
 * option, an illegal call), `PeerError` is the other side's misbehaviour or refusal (a malformed
 * packet, an error body from DPS). Messages never carry secrets: keys, signatures and tokens are
 * never interpolated into them.
 */

/** Stable, documented error codes. */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "ILLEGAL_EVENT"
  | "BUFFER_TOO_SMALL"
  | "MALFORMED_BASE64"
  | "MALFORMED_UTF8"
  | "MALFORMED_TOPIC"
  | "MALFORMED_JSON"
  | "MALFORMED_BODY"
  | "OVERSIZE"
  | "UNKNOWN_STATUS"
  | "CLOCK_NOT_SET"
  | "TIMEOUT"
  | "TRANSPORT"
  | "CONNACK_REFUSED"
  | "DPS_ERROR"
  | "REGISTRATION_FAILED"
  | "RETRY_BUDGET_EXHAUSTED"
  | "AUTHENTICATION_FAILED"
  | "CACHE_RECORD_INVALID"
  | "STORAGE"
  | "FLASH_WRITE_SETS_BITS"
  | "POWER_CUT"
  | "QUEUE_FULL"
  | "NOT_CONNECTED"
  | "STOPPED"
  | "HUB_REFUSED"
  | "HUB_UNREACHABLE"
  | "ASSIGNMENT_UNUSABLE"
  | "INTERNAL";

export class DpsError extends Error {
  readonly code: ErrorCode;
  /** `usage`: the caller's mistake; `peer`: what came from the network or storage was wrong. */
  readonly side: "usage" | "peer";
  constructor(code: ErrorCode, side: "usage" | "peer", message: string) {
    super(message);
    this.code = code;
    this.side = side;
    this.name = side === "usage" ? "UsageError" : "PeerError";
  }
}

/** The caller's mistake: fix the call or the configuration. */
export class UsageError extends DpsError {
  constructor(code: ErrorCode, message: string) {
    super(code, "usage", message);
  }
}

/** Something that came from outside (network, service, storage) was wrong or refused. */
export class PeerError extends DpsError {
  constructor(code: ErrorCode, message: string) {
    super(code, "peer", message);
  }
}

/** Throws a UsageError unless `condition` holds. */
export function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new UsageError("INVALID_ARGUMENT", message);
}

/** Shortens untrusted text for a message: no control characters, at most `max` characters. */
export function excerpt(text: string, max = 60): string {
  let out = "";
  for (let i = 0; i < text.length && out.length < max; i++) {
    const c = text.charCodeAt(i);
    out += c < 0x20 || c === 0x7f ? "?" : text[i];
  }
  return text.length > max ? out + "…" : out;
}

/** `text` without the periods and spaces it ends with, so that a sentence can follow it. */
export function clause(text: string): string {
  return text.replace(/[.\s]+$/, "");
}

/** Copies the fields of `from` that are defined into `to` (status records carry no undefined). */
export function copyDefined(to: Record<string, unknown>, from: object): void {
  const keys = Object.keys(from);
  for (let i = 0; i < keys.length; i++) {
    const value = (from as Record<string, unknown>)[keys[i]];
    if (value !== undefined) to[keys[i]] = value;
  }
}
