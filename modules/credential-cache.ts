/**
 * The credential cache: the last DPS assignment, kept in flash so that a reboot goes straight to
 * the assigned hub. docs/CREDENTIAL-CACHE.md describes the record byte by byte and argues why a
 * power cut at any byte leaves the previous record or the new one.
 *
 * In short: two slots (each one or more flash sectors); a save erases the slot that does not hold
 * the newest valid record, writes header, nonce and sealed box, then a commit mark as a separate,
 * last write. A load reads both slots, rejects (with a reason) every slot that is empty, torn,
 * truncated, foreign, tampered or from an unknown format, and returns the valid record with the
 * newest sequence number. The content is sealed with tweetnacl's secretbox under a key derived
 * from the device key, so nothing that fails to authenticate is ever trusted.
 *
 * Nothing in the record is secret (hub name, device id): sealing is for integrity and for binding
 * the record to this device and key. The device key itself is never stored.
 */
import nacl from "./tweetnacl.js";
import type { CryptoPort } from "./crypto.js";
import { base64Decode, bytesEqual, utf8Decode, utf8Encode } from "./encoding.js";
import { check, UsageError } from "./errors.js";
import { FLASH_ERASED_BYTE, type FlashPort } from "./flash.js";
import type { Clock, SecureRandom } from "./ports.js";

/** "DPSC": the first four bytes of every record. */
export const CACHE_MAGIC: readonly number[] = Object.freeze([0x44, 0x50, 0x53, 0x43]);
/** The format this code writes and the only one it reads. */
export const CACHE_FORMAT_VERSION = 1;
/** magic (4), version (1), reserved (1), box length (2), sequence (4). */
export const CACHE_HEADER_BYTES = 12;
export const CACHE_NONCE_BYTES = 24;
/** Poly1305 tag that secretbox adds. */
export const CACHE_BOX_OVERHEAD_BYTES = 16;
/** "DONE": written last, after the rest of the record, by a write of its own. */
export const CACHE_COMMIT_MARK: readonly number[] = Object.freeze([0x44, 0x4f, 0x4e, 0x45]);
export const CACHE_COMMIT_BYTES = 4;
/** The largest content (JSON, UTF-8) a record may carry; bounds every buffer of the cache. */
export const CACHE_MAX_CONTENT_BYTES = 1024;
/** The smallest content: `{}`. */
const CACHE_MIN_CONTENT_BYTES = 2;
/** Offsets inside a record. */
const NONCE_OFFSET = CACHE_HEADER_BYTES;
const BOX_OFFSET = NONCE_OFFSET + CACHE_NONCE_BYTES;
/** Box lengths a version 1 record can have: tag + sealed header copy + content. */
const MIN_BOX_BYTES = CACHE_BOX_OVERHEAD_BYTES + CACHE_HEADER_BYTES + CACHE_MIN_CONTENT_BYTES;
const MAX_BOX_BYTES = CACHE_BOX_OVERHEAD_BYTES + CACHE_HEADER_BYTES + CACHE_MAX_CONTENT_BYTES;
/** Bytes around the content: header, nonce, tag, sealed header copy, commit mark (72). */
export const CACHE_RECORD_OVERHEAD_BYTES = BOX_OFFSET + CACHE_BOX_OVERHEAD_BYTES + CACHE_HEADER_BYTES + CACHE_COMMIT_BYTES;
/** The largest record (1096 bytes): fits one 4096-byte ESP32 sector. */
export const CACHE_MAX_RECORD_BYTES = CACHE_RECORD_OVERHEAD_BYTES + CACHE_MAX_CONTENT_BYTES;
/** Domain separation for the key derivation; the registration id follows it. */
export const CACHE_KEY_LABEL = "dps-runtime/credential-cache/v1";

/** The two slots. */
export type CacheSlot = 0 | 1;

/** What a reboot needs to go straight to the hub, as DPS assigned it. */
export interface CachedAssignment {
  /** The IoT Hub host name DPS assigned, e.g. `contoso-hub-1.azure-devices.net`. */
  readonly assignedHub: string;
  /** The device id on that hub. */
  readonly deviceId: string;
  /** The DPS registration id (always the cache's own). */
  readonly registrationId: string;
  /** DPS registration substatus (`initialAssignment`, `deviceDataMigrated`, ...), when given. */
  readonly substatus?: string;
  /** The DPS ID scope the assignment came from, so a change of scope can invalidate the cache. */
  readonly idScope?: string;
  /** When the record was written, in milliseconds since 1970 (the device clock). */
  readonly writtenAt: number;
}

/** What `save` takes: `writtenAt` is filled from the clock when absent. */
export type CachedAssignmentInput = Omit<CachedAssignment, "writtenAt"> & { readonly writtenAt?: number };

/**
 * Why a slot gave no record:
 * - `empty`: the slot's header is erased (never written, or erased by `invalidate`);
 * - `bad-magic`: the slot holds something that is not a cache record (or a damaged magic);
 * - `unsupported-version`: a record of a format version this code does not read;
 * - `bad-length`: the header declares a box length no version 1 record can have;
 * - `truncated`: the declared record runs past the end of the slot;
 * - `torn`: the commit mark is missing or partial: the write never finished;
 * - `foreign-or-tampered`: the box does not open: another device, key or registration id
 *   sealed it, or a bit of nonce or box changed;
 * - `header-mismatch`: the box opened but the header sealed inside differs from the one in the
 *   clear (sequence, length, version or reserved byte changed after sealing);
 * - `malformed-content`: the box opened but its content is not a valid assignment for this
 *   registration id (a writer's bug; it cannot come from damage).
 */
export type CacheRejectReason =
  | "empty"
  | "bad-magic"
  | "unsupported-version"
  | "bad-length"
  | "truncated"
  | "torn"
  | "foreign-or-tampered"
  | "header-mismatch"
  | "malformed-content";

export interface CacheSlotRejection {
  readonly slot: CacheSlot;
  readonly reason: CacheRejectReason;
  /** A sentence for logs; never carries a key or the record's bytes. */
  readonly detail: string;
  /** The sequence number of the header, when the header was readable (not trusted). */
  readonly sequence?: number;
}

export interface CacheLoadResult {
  /** The newest valid record's content; absent when neither slot holds one (provision again). */
  readonly assignment?: CachedAssignment;
  readonly slot?: CacheSlot;
  readonly sequence?: number;
  /** Every slot that gave no record, with the reason. A valid but older record is not listed. */
  readonly rejected: readonly CacheSlotRejection[];
}

export interface CacheSaveResult {
  readonly slot: CacheSlot;
  readonly sequence: number;
}

export interface CacheInvalidateResult {
  /** Slots erased, in the order they were erased (slots already erased are skipped). */
  readonly erased: readonly CacheSlot[];
}

export interface CredentialCacheOptions {
  /** Where the two slots live. */
  readonly flash: FlashPort;
  /** Fills each record's nonce. */
  readonly random: SecureRandom;
  /** The device's symmetric key: its bytes, or base64 as Azure shows it. Not kept. */
  readonly deviceKey: Uint8Array | string;
  /** The DPS registration id; it is bound into the key, so records of another id do not open. */
  readonly registrationId: string;
  /** HMAC for the key derivation (the host's native one, or `portableCrypto` from sha256.ts). */
  readonly crypto: CryptoPort;
  /** Fills `writtenAt` when a saved assignment has none. */
  readonly clock?: Clock;
  /** First sector of slot 0 (default 0). */
  readonly firstSector?: number;
  /** Sectors per slot (default 1). Slot 1 follows slot 0. */
  readonly sectorsPerSlot?: number;
}

/**
 * The secretbox key of a device's cache: HMAC-SHA256(device key, label || registration id).
 * The label has a fixed length, so the concatenation is unambiguous.
 */
export function deriveCacheKey(crypto: CryptoPort, deviceKey: Uint8Array, registrationId: string): Uint8Array {
  const label = utf8Encode(CACHE_KEY_LABEL);
  const id = utf8Encode(registrationId);
  const message = new Uint8Array(label.length + id.length);
  message.set(label, 0);
  message.set(id, label.length);
  return crypto.hmacSha256(deviceKey, message);
}

/**
 * Serial-number comparison (RFC 1982 style, 32 bits): true when `a` follows `b`. Sequence numbers
 * therefore wrap from 0xFFFFFFFF to 0 without a special case; the two slots never hold sequences
 * more than one apart in normal operation, far inside the 2^31 window.
 */
export function sequenceIsNewer(a: number, b: number): boolean {
  const distance = (a - b) >>> 0;
  return distance !== 0 && distance < 0x80000000;
}

/**
 * Builds a complete record (header, nonce, box, commit mark) for `assignment` with `sequence`.
 * Pure: the caller supplies the key and the nonce (24 bytes).
 * @throws UsageError INVALID_ARGUMENT on a bad assignment, sequence, key or nonce;
 *   OVERSIZE when the content exceeds CACHE_MAX_CONTENT_BYTES.
 */
export function sealCacheRecord(key: Uint8Array, sequence: number, assignment: CachedAssignment, nonce: Uint8Array): Uint8Array {
  return sealContent(key, sequence, encodeContent(assignment, assignment.registrationId), nonce);
}

/**
 * The content bytes of a record, checked.
 * @throws UsageError INVALID_ARGUMENT on a bad assignment, OVERSIZE past CACHE_MAX_CONTENT_BYTES.
 */
function encodeContent(assignment: CachedAssignment, registrationId: string): Uint8Array {
  const problem = assignmentProblem(assignment, registrationId);
  if (problem) throw new UsageError("INVALID_ARGUMENT", `cannot cache this assignment: ${problem}`);
  const content = utf8Encode(contentJson(assignment));
  if (content.length > CACHE_MAX_CONTENT_BYTES) {
    throw new UsageError("OVERSIZE", `cache content is ${content.length} bytes; the limit is ${CACHE_MAX_CONTENT_BYTES}`);
  }
  return content;
}

function sealContent(key: Uint8Array, sequence: number, content: Uint8Array, nonce: Uint8Array): Uint8Array {
  check(key.length === nacl.secretbox.keyLength, `cache key must be ${nacl.secretbox.keyLength} bytes`);
  check(nonce.length === CACHE_NONCE_BYTES, `cache nonce must be ${CACHE_NONCE_BYTES} bytes, got ${nonce.length}`);
  check(Number.isInteger(sequence) && sequence >= 0 && sequence <= 0xffffffff, `sequence must be a 32-bit unsigned integer, got ${sequence}`);
  const boxLength = CACHE_BOX_OVERHEAD_BYTES + CACHE_HEADER_BYTES + content.length;
  const record = new Uint8Array(BOX_OFFSET + boxLength + CACHE_COMMIT_BYTES);
  record.set(CACHE_MAGIC, 0);
  record[4] = CACHE_FORMAT_VERSION;
  record[5] = 0;
  record[6] = boxLength >> 8;
  record[7] = boxLength & 0xff;
  record[8] = sequence >>> 24;
  record[9] = (sequence >>> 16) & 0xff;
  record[10] = (sequence >>> 8) & 0xff;
  record[11] = sequence & 0xff;
  record.set(nonce, NONCE_OFFSET);
  const plain = new Uint8Array(CACHE_HEADER_BYTES + content.length);
  plain.set(record.subarray(0, CACHE_HEADER_BYTES), 0);
  plain.set(content, CACHE_HEADER_BYTES);
  record.set(nacl.secretbox(plain, nonce, key), BOX_OFFSET);
  record.set(CACHE_COMMIT_MARK, BOX_OFFSET + boxLength);
  return record;
}

/**
 * The content as JSON, fields in a fixed order (the interface's) so that every engine writes the
 * same bytes.
 */
function contentJson(a: CachedAssignment): string {
  const out: Record<string, string | number> = {
    assignedHub: a.assignedHub,
    deviceId: a.deviceId,
    registrationId: a.registrationId,
  };
  if (a.substatus !== undefined) out.substatus = a.substatus;
  if (a.idScope !== undefined) out.idScope = a.idScope;
  out.writtenAt = a.writtenAt;
  return JSON.stringify(out);
}

/** What is wrong with an assignment (written or read), or undefined when it is fine. */
function assignmentProblem(a: unknown, registrationId: string): string | undefined {
  if (typeof a !== "object" || a === null || Array.isArray(a)) return "the content is not an object";
  const o = a as Record<string, unknown>;
  if (typeof o.assignedHub !== "string" || o.assignedHub.length === 0) return "assignedHub must be a non-empty string";
  if (typeof o.deviceId !== "string" || o.deviceId.length === 0) return "deviceId must be a non-empty string";
  if (typeof o.registrationId !== "string" || o.registrationId !== registrationId) return "registrationId is not the cache's registration id";
  if (typeof o.writtenAt !== "number" || !Number.isSafeInteger(o.writtenAt) || o.writtenAt < 0) {
    return "writtenAt must be a non-negative integer (milliseconds since 1970)";
  }
  if (o.substatus !== undefined && typeof o.substatus !== "string") return "substatus must be a string when present";
  if (o.idScope !== undefined && typeof o.idScope !== "string") return "idScope must be a string when present";
  return undefined;
}

type SlotReading =
  | { readonly ok: true; readonly slot: CacheSlot; readonly sequence: number; readonly assignment: CachedAssignment }
  | ({ readonly ok: false } & CacheSlotRejection);

/**
 * The cache over two slots of a FlashPort. Synchronous, like the flash under it.
 *
 * Every method may throw what the FlashPort throws (PeerError POWER_CUT or STORAGE): a storage
 * that cannot be read is not "bad content" and is not hidden. Bad content never throws.
 */
export class CredentialCache {
  readonly registrationId: string;
  /** Bytes available to one record. */
  readonly slotBytes: number;
  #flash: FlashPort;
  #random: SecureRandom;
  #clock: Clock | undefined;
  #firstSector: number;
  #sectorsPerSlot: number;
  #key: Uint8Array | undefined;

  /**
   * @throws UsageError INVALID_ARGUMENT on a missing option, a slot layout that does not fit the
   *   flash or is smaller than the smallest record; MALFORMED_BASE64 on a bad base64 key.
   */
  constructor(options: CredentialCacheOptions) {
    check(typeof options === "object" && options !== null, "CredentialCache needs an options object");
    const { flash, random, registrationId } = options;
    check(typeof flash === "object" && flash !== null, "CredentialCache needs a flash port");
    check(typeof random === "function", "CredentialCache needs a secure random source");
    check(typeof registrationId === "string" && registrationId.length > 0, "registrationId must be a non-empty string");
    const firstSector = options.firstSector ?? 0;
    const sectorsPerSlot = options.sectorsPerSlot ?? 1;
    check(Number.isInteger(firstSector) && firstSector >= 0, `firstSector must be a non-negative integer, got ${firstSector}`);
    check(Number.isInteger(sectorsPerSlot) && sectorsPerSlot > 0, `sectorsPerSlot must be a positive integer, got ${sectorsPerSlot}`);
    check(
      firstSector + 2 * sectorsPerSlot <= flash.sectorCount,
      `two slots of ${sectorsPerSlot} sector(s) from sector ${firstSector} do not fit a flash of ${flash.sectorCount} sectors`,
    );
    this.slotBytes = sectorsPerSlot * flash.sectorSize;
    check(
      this.slotBytes >= CACHE_RECORD_OVERHEAD_BYTES + CACHE_MIN_CONTENT_BYTES,
      `a slot of ${this.slotBytes} bytes cannot hold a record (at least ${CACHE_RECORD_OVERHEAD_BYTES + CACHE_MIN_CONTENT_BYTES})`,
    );
    this.registrationId = registrationId;
    this.#flash = flash;
    this.#random = random;
    this.#clock = options.clock;
    this.#firstSector = firstSector;
    this.#sectorsPerSlot = sectorsPerSlot;

    const crypto = options.crypto;
    check(typeof crypto === "object" && crypto !== null && typeof crypto.hmacSha256 === "function", "CredentialCache needs a crypto port (hmacSha256)");
    if (typeof options.deviceKey === "string") {
      const keyBytes = base64Decode(options.deviceKey, "deviceKey");
      check(keyBytes.length > 0, "deviceKey must not be empty");
      this.#key = deriveCacheKey(crypto, keyBytes, registrationId);
      keyBytes.fill(0);
    } else {
      check(options.deviceKey instanceof Uint8Array && options.deviceKey.length > 0, "deviceKey must be non-empty bytes or base64");
      this.#key = deriveCacheKey(crypto, options.deviceKey, registrationId);
    }
    check(this.#key.length === nacl.secretbox.keyLength, "the crypto port's HMAC must return 32 bytes");
  }

  /**
   * Reads both slots and returns the newest valid record, plus the reason for every slot that
   * gave none. Never throws on what it reads.
   * @throws UsageError STOPPED after `close`; whatever the flash port throws.
   */
  load(): CacheLoadResult {
    const key = this.#liveKey();
    const readings = [this.#readSlot(0, key), this.#readSlot(1, key)];
    const newest = pickNewest(readings);
    const rejected: CacheSlotRejection[] = [];
    for (let i = 0; i < readings.length; i++) {
      const r = readings[i];
      if (r.ok) continue;
      const { ok: _, ...rejection } = r;
      rejected.push(rejection);
    }
    if (!newest) return { rejected };
    return { assignment: newest.assignment, slot: newest.slot, sequence: newest.sequence, rejected };
  }

  /**
   * Writes `assignment` as the newest record: into the slot that does not hold the newest valid
   * record, with that record's sequence + 1 (1 when there is none). Sizes are checked before the
   * flash is touched. The previous record stays readable until the new one's commit mark is down.
   * @throws UsageError INVALID_ARGUMENT on a bad assignment (or no writtenAt and no clock, or a
   *   random source that leaves the nonce all zero),
   *   OVERSIZE when the record does not fit a slot or the content limit, STOPPED after `close`;
   *   whatever the flash port throws (after a power cut the next load tells what survived).
   */
  save(assignment: CachedAssignmentInput): CacheSaveResult {
    const key = this.#liveKey();
    check(typeof assignment === "object" && assignment !== null, "save needs an assignment object");
    let writtenAt = assignment.writtenAt;
    if (writtenAt === undefined) {
      check(this.#clock !== undefined, "save needs assignment.writtenAt or a clock in the cache's options");
      writtenAt = Math.floor(this.#clock());
    }
    // Checked and sized before anything is read or erased: nothing is touched for a record that
    // cannot be written.
    const content = encodeContent({ ...assignment, writtenAt }, this.registrationId);
    const size = CACHE_RECORD_OVERHEAD_BYTES + content.length;
    if (size > this.slotBytes) {
      throw new UsageError("OVERSIZE", `a cache record of ${size} bytes does not fit a slot of ${this.slotBytes} bytes`);
    }

    const readings = [this.#readSlot(0, key), this.#readSlot(1, key)];
    const newest = pickNewest(readings);
    const slot: CacheSlot = newest ? (newest.slot === 0 ? 1 : 0) : 0;
    const sequence = newest ? (newest.sequence + 1) >>> 0 : 1;
    const nonce = new Uint8Array(CACHE_NONCE_BYTES);
    this.#random(nonce);
    // A source that fills nothing would repeat the nonce on every save; 24 random zero bytes
    // have odds of 2^-192.
    let filled = 0;
    for (let i = 0; i < nonce.length; i++) filled |= nonce[i];
    check(filled !== 0, "the secure random source left the nonce all zero: is it filling the array it is given?");
    const record = sealContent(key, sequence, content, nonce);

    // The order is the whole power-cut argument (docs/CREDENTIAL-CACHE.md): erase the target, write
    // everything but the commit mark, then the commit mark alone.
    this.#eraseSlot(slot);
    const base = this.#slotOffset(slot);
    const commitAt = record.length - CACHE_COMMIT_BYTES;
    this.#flash.write(base, record.subarray(0, commitAt));
    this.#flash.write(base + commitAt, record.subarray(commitAt));
    return { slot, sequence };
  }

  /**
   * Empties the cache so that the device provisions again. The slot without the newest record is
   * erased first, then the newest: a cut in between leaves the newest record (as if invalidate
   * had not begun), never the older one. Slots that read as fully erased are skipped.
   * @throws UsageError STOPPED after `close`; whatever the flash port throws.
   */
  invalidate(): CacheInvalidateResult {
    const key = this.#liveKey();
    const readings = [this.#readSlot(0, key), this.#readSlot(1, key)];
    const newest = pickNewest(readings);
    const order: CacheSlot[] = newest ? (newest.slot === 0 ? [1, 0] : [0, 1]) : [0, 1];
    const erased: CacheSlot[] = [];
    for (let i = 0; i < order.length; i++) {
      const slot = order[i];
      if (this.#slotIsErased(slot)) continue;
      this.#eraseSlot(slot);
      erased.push(slot);
    }
    return { erased };
  }

  /** Zeroes the derived key; later calls throw UsageError STOPPED. Idempotent. */
  close(): void {
    if (this.#key) this.#key.fill(0);
    this.#key = undefined;
  }

  #liveKey(): Uint8Array {
    if (!this.#key) throw new UsageError("STOPPED", "the credential cache is closed");
    return this.#key;
  }

  #slotOffset(slot: CacheSlot): number {
    return (this.#firstSector + slot * this.#sectorsPerSlot) * this.#flash.sectorSize;
  }

  #eraseSlot(slot: CacheSlot): void {
    const first = this.#firstSector + slot * this.#sectorsPerSlot;
    for (let s = 0; s < this.#sectorsPerSlot; s++) this.#flash.erase(first + s);
  }

  #slotIsErased(slot: CacheSlot): boolean {
    const bytes = this.#flash.read(this.#slotOffset(slot), this.slotBytes);
    for (let i = 0; i < bytes.length; i++) if (bytes[i] !== FLASH_ERASED_BYTE) return false;
    return true;
  }

  /** Reads and checks one slot, cheapest checks first; decryption comes last. */
  #readSlot(slot: CacheSlot, key: Uint8Array): SlotReading {
    const base = this.#slotOffset(slot);
    const header = this.#flash.read(base, CACHE_HEADER_BYTES);
    const reject = (reason: CacheRejectReason, detail: string, sequence?: number): SlotReading =>
      sequence === undefined ? { ok: false, slot, reason, detail } : { ok: false, slot, reason, detail, sequence };

    let erased = true;
    for (let i = 0; i < CACHE_HEADER_BYTES; i++) if (header[i] !== FLASH_ERASED_BYTE) erased = false;
    if (erased) return reject("empty", "the slot's header is erased");
    for (let i = 0; i < CACHE_MAGIC.length; i++) {
      if (header[i] !== CACHE_MAGIC[i]) return reject("bad-magic", "the slot does not start with the cache record magic");
    }
    if (header[4] !== CACHE_FORMAT_VERSION) {
      return reject("unsupported-version", `record format version ${header[4]}; this code reads version ${CACHE_FORMAT_VERSION}`);
    }
    const boxLength = (header[6] << 8) | header[7];
    const sequence = ((header[8] << 24) | (header[9] << 16) | (header[10] << 8) | header[11]) >>> 0;
    if (boxLength < MIN_BOX_BYTES || boxLength > MAX_BOX_BYTES) {
      return reject("bad-length", `declared box length ${boxLength} is outside ${MIN_BOX_BYTES}..${MAX_BOX_BYTES}`, sequence);
    }
    const recordLength = BOX_OFFSET + boxLength + CACHE_COMMIT_BYTES;
    if (recordLength > this.slotBytes) {
      return reject("truncated", `the record declares ${recordLength} bytes; the slot has ${this.slotBytes}`, sequence);
    }
    const rest = this.#flash.read(base + NONCE_OFFSET, recordLength - NONCE_OFFSET);
    const commitAt = recordLength - CACHE_COMMIT_BYTES - NONCE_OFFSET;
    let commitErased = true;
    let committed = true;
    for (let i = 0; i < CACHE_COMMIT_BYTES; i++) {
      if (rest[commitAt + i] !== FLASH_ERASED_BYTE) commitErased = false;
      if (rest[commitAt + i] !== CACHE_COMMIT_MARK[i]) committed = false;
    }
    if (!committed) {
      return reject("torn", commitErased ? "no commit mark: the write did not finish" : "the commit mark is damaged or partly written", sequence);
    }
    const nonce = rest.subarray(0, CACHE_NONCE_BYTES);
    const box = rest.subarray(CACHE_NONCE_BYTES, CACHE_NONCE_BYTES + boxLength);
    const plain = nacl.secretbox.open(box, nonce, key);
    if (!plain) {
      return reject("foreign-or-tampered", "the sealed box does not open under this device's cache key", sequence);
    }
    if (!bytesEqual(plain.subarray(0, CACHE_HEADER_BYTES), header)) {
      return reject("header-mismatch", "the header in the clear differs from the one sealed in the box", sequence);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(utf8Decode(plain.subarray(CACHE_HEADER_BYTES)));
    } catch (error) {
      const why = error instanceof Error ? error.name : "error";
      return reject("malformed-content", `the sealed content is not UTF-8 JSON (${why})`, sequence);
    }
    const problem = assignmentProblem(parsed, this.registrationId);
    if (problem) return reject("malformed-content", `the sealed content is not a valid assignment: ${problem}`, sequence);
    const o = parsed as CachedAssignment;
    const assignment: CachedAssignment = Object.freeze({
      assignedHub: o.assignedHub,
      deviceId: o.deviceId,
      registrationId: o.registrationId,
      ...(o.substatus !== undefined ? { substatus: o.substatus } : {}),
      ...(o.idScope !== undefined ? { idScope: o.idScope } : {}),
      writtenAt: o.writtenAt,
    });
    return { ok: true, slot, sequence, assignment };
  }
}

/** The valid reading with the newest sequence; on a tie (impossible in normal use) slot 0. */
function pickNewest(readings: SlotReading[]): Extract<SlotReading, { ok: true }> | undefined {
  let best: Extract<SlotReading, { ok: true }> | undefined;
  for (let i = 0; i < readings.length; i++) {
    const r = readings[i];
    if (!r.ok) continue;
    if (!best || sequenceIsNewer(r.sequence, best.sequence)) best = r;
  }
  return best;
}
