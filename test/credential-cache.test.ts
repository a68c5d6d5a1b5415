// The credential cache over NOR flash: round trips, slot alternation, a power cut at every byte of
// a save and during every erase, every single-bit flip of a stored record, foreign, truncated and
// future records, size limits, the file-backed flash of the desktop host, a random property over
// saves and power cuts, and a byte-for-byte cross-check with the XS tier.
import test from "ava";
import fc from "fast-check";
import { createHash, createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nacl from "tweetnacl";
import {
  CACHE_MAX_CONTENT_BYTES,
  CACHE_RECORD_OVERHEAD_BYTES,
  CredentialCache,
  deriveCacheKey,
  sealCacheRecord,
  sequenceIsNewer,
  type CacheRejectReason,
  type CachedAssignment,
  type CredentialCacheOptions,
} from "../modules/credential-cache.js";
import type { CryptoPort } from "../modules/crypto.js";
import { portableCrypto } from "../modules/sha256.js";
import { DpsError } from "../modules/errors.js";
import type { FlashPort } from "../modules/flash.js";
import { MemoryFlash } from "../modules/memory-flash.js";
import { NorFlashFile } from "../hosts/desktop/nor-flash-file.js";
import { projectRoot, runXs, type XsRun } from "./support/xs.js";
import { bytesToHex, hexToBytes } from "./vectors/crypto.js";
import { A, B, C, KEY, OTHER_KEY, REG, SECTOR, countingRandom } from "./vectors/cache.js";

// The same keys, ids and assignments as test/xs/cache.xs.ts, so that the two sides can compare.

/** node:crypto behind the port, as the desktop host does: an independent HMAC from the XS side's. */
const nodeCrypto: CryptoPort = {
  hmacSha256: (key, message) => new Uint8Array(createHmac("sha256", key).update(message).digest()),
  sha256: (data) => new Uint8Array(createHash("sha256").update(data).digest()),
};

function open(flash: FlashPort, extra: Partial<CredentialCacheOptions> = {}): CredentialCache {
  return new CredentialCache({ flash, random: countingRandom(), deviceKey: KEY, registrationId: REG, crypto: nodeCrypto, ...extra });
}

function newFlash(image?: Uint8Array, sectorSize = SECTOR, sectorCount = 2): MemoryFlash {
  return new MemoryFlash({ sectorSize, sectorCount, image });
}

function hubOf(flash: FlashPort, extra: Partial<CredentialCacheOptions> = {}): string | undefined {
  return open(flash, extra).load().assignment?.assignedHub;
}

/** Two records: A (sequence 1) in slot 0, B (sequence 2) in slot 1. */
function twoRecords(): MemoryFlash {
  const flash = newFlash();
  const cache = open(flash);
  cache.save(A);
  cache.save(B);
  return flash;
}

function code(error: unknown): string | undefined {
  return error instanceof DpsError ? error.code : undefined;
}

/** An independent writer of the documented layout (docs/CREDENTIAL-CACHE.md), for crafted records. */
function craftRecord(options: { content: string | Uint8Array; sequence: number; version?: number; key?: Uint8Array; nonce?: Uint8Array }): Uint8Array {
  const key = options.key ?? deriveCacheKey(nodeCrypto, Buffer.from(KEY, "base64"), REG);
  const nonce = options.nonce ?? new Uint8Array(24).fill(7);
  const content = typeof options.content === "string" ? Buffer.from(options.content, "utf8") : Buffer.from(options.content);
  const boxLength = 16 + 12 + content.length;
  const header = Buffer.alloc(12);
  header.write("DPSC", 0, "latin1");
  header[4] = options.version ?? 1;
  header[5] = 0;
  header.writeUInt16BE(boxLength, 6);
  header.writeUInt32BE(options.sequence, 8);
  const box = nacl.secretbox(new Uint8Array(Buffer.concat([header, content])), nonce, key);
  return new Uint8Array(Buffer.concat([header, nonce, box, Buffer.from("DONE", "latin1")]));
}

function contentOf(a: CachedAssignment): string {
  return JSON.stringify({
    assignedHub: a.assignedHub,
    deviceId: a.deviceId,
    registrationId: a.registrationId,
    substatus: a.substatus,
    idScope: a.idScope,
    writtenAt: a.writtenAt,
  });
}

function reasons(flash: FlashPort): CacheRejectReason[] {
  return open(flash).load().rejected.map((r) => r.reason);
}

// ---------------------------------------------------------------------------------------------
// Round trips and slot choice

test("cache round trip: save then load returns the assignment, slot 0, sequence 1", (t) => {
  const flash = newFlash();
  t.deepEqual(open(flash).save(A), { slot: 0, sequence: 1 });
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, A);
  t.is(loaded.slot, 0);
  t.is(loaded.sequence, 1);
  t.deepEqual(loaded.rejected, [{ slot: 1, reason: "empty", detail: "the slot's header is erased" }]);
  t.true(Object.isFrozen(loaded.assignment));
});

test("cache warm read after reboot: a new cache (base64 or byte key, either crypto port) reads the record", (t) => {
  const flash = newFlash();
  open(flash).save(A);
  const rebooted = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2, image: flash.snapshot() });
  t.deepEqual(open(rebooted).load().assignment, A);
  t.deepEqual(open(rebooted, { deviceKey: new Uint8Array(Buffer.from(KEY, "base64")) }).load().assignment, A);
  t.deepEqual(open(rebooted, { crypto: portableCrypto }).load().assignment, A);
  t.throws(() => open(rebooted, { crypto: undefined as never }), { code: "INVALID_ARGUMENT" } as never, "a crypto port is required");
});

test("cache empty flash: load gives no assignment and two empty slots", (t) => {
  const loaded = open(newFlash()).load();
  t.is(loaded.assignment, undefined);
  t.is(loaded.slot, undefined);
  t.deepEqual(loaded.rejected.map((r) => [r.slot, r.reason]), [[0, "empty"], [1, "empty"]]);
});

test("cache saves alternate slots with increasing sequence; the newest of two valid records wins", (t) => {
  const flash = newFlash();
  const cache = open(flash);
  t.deepEqual(
    [A, B, C, A, B].map((a) => cache.save(a)),
    [{ slot: 0, sequence: 1 }, { slot: 1, sequence: 2 }, { slot: 0, sequence: 3 }, { slot: 1, sequence: 4 }, { slot: 0, sequence: 5 }],
  );
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, B);
  t.is(loaded.sequence, 5);
  t.deepEqual(loaded.rejected, [], "a valid but older record is not a rejection");
  t.is(flash.stats.erases, 5, "one erase per save (one sector per slot)");
});

test("cache save fills writtenAt from the clock when the assignment has none", (t) => {
  const flash = newFlash();
  const { writtenAt: _, ...rest } = A;
  open(flash, { clock: () => 1234.9 }).save(rest);
  t.is(open(flash).load().assignment?.writtenAt, 1234);
  const error = t.throws(() => open(newFlash()).save(rest));
  t.is(code(error), "INVALID_ARGUMENT");
});

test("cache save goes to the slot whose record is invalid, keeping the valid one", (t) => {
  const flash = twoRecords();
  flash.raw[SECTOR + 40] ^= 0x10; // damage B (slot 1, the newest): A in slot 0 is now the newest valid
  t.is(hubOf(flash), A.assignedHub);
  t.deepEqual(open(flash).save(C), { slot: 1, sequence: 2 });
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, C);
  t.deepEqual(loaded.rejected, []);
});

test("cache sequence numbers wrap with serial arithmetic: 0 follows 0xFFFFFFFF", (t) => {
  t.true(sequenceIsNewer(2, 1));
  t.false(sequenceIsNewer(1, 2));
  t.false(sequenceIsNewer(7, 7));
  t.true(sequenceIsNewer(0, 0xffffffff));
  t.false(sequenceIsNewer(0xffffffff, 0));
  const flash = newFlash();
  flash.raw.set(craftRecord({ content: contentOf(A), sequence: 0xffffffff }), 0);
  t.is(open(flash).load().sequence, 0xffffffff);
  t.deepEqual(open(flash).save(B), { slot: 1, sequence: 0 });
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, B);
  t.is(loaded.sequence, 0);
  t.deepEqual(open(flash).save(C), { slot: 0, sequence: 1 });
  t.is(hubOf(flash), C.assignedHub);
});

// ---------------------------------------------------------------------------------------------
// The record format

test("cache record layout matches the documented table (an independent writer gives the same bytes)", (t) => {
  const flash = newFlash();
  const fixedNonce = (bytes: Uint8Array): void => {
    bytes.fill(7);
  };
  open(flash, { random: fixedNonce }).save(A);
  const expected = craftRecord({ content: contentOf(A), sequence: 1 });
  t.is(flash.stats.bytesWritten, expected.length);
  t.is(expected.length, CACHE_RECORD_OVERHEAD_BYTES + Buffer.byteLength(contentOf(A)));
  t.is(bytesToHex(flash.read(0, expected.length)), bytesToHex(expected));
  t.true(flash.read(expected.length, SECTOR - expected.length).every((b) => b === 0xff), "the rest of the slot stays erased");
  t.is(bytesToHex(sealCacheRecord(deriveCacheKey(nodeCrypto, Buffer.from(KEY, "base64"), REG), 1, A, new Uint8Array(24).fill(7))), bytesToHex(expected));
});

test("cache key derivation: HMAC-SHA256(device key, label || registration id)", (t) => {
  const key = Buffer.from(KEY, "base64");
  const expected = createHmac("sha256", key).update("dps-runtime/credential-cache/v1" + REG).digest("hex");
  t.is(bytesToHex(deriveCacheKey(nodeCrypto, key, REG)), expected);
  t.is(bytesToHex(deriveCacheKey(portableCrypto, key, REG)), expected);
});

test("cache rejects a foreign record (another device key, another registration id) as foreign-or-tampered", (t) => {
  const flash = newFlash();
  open(flash).save(A);
  for (const extra of [{ deviceKey: OTHER_KEY }, { registrationId: "sensor-0043" }]) {
    const loaded = open(flash, extra).load();
    t.is(loaded.assignment, undefined);
    t.deepEqual(loaded.rejected.map((r) => [r.slot, r.reason, r.sequence]), [[0, "foreign-or-tampered", 1], [1, "empty", undefined]]);
  }
});

test("cache rejects a record of a future format version as unsupported-version", (t) => {
  const flash = newFlash();
  flash.raw.set(craftRecord({ content: contentOf(A), sequence: 9, version: 2 }), SECTOR);
  t.deepEqual(open(flash).save(B), { slot: 0, sequence: 1 });
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, B);
  t.deepEqual(loaded.rejected.map((r) => [r.slot, r.reason]), [[1, "unsupported-version"]]);
  t.regex(loaded.rejected[0].detail, /version 2/);
});

test("cache rejects a slot holding something else as bad-magic", (t) => {
  const flash = newFlash();
  flash.raw.set(Buffer.from("{\"some\":\"other data\"}"), SECTOR);
  t.deepEqual(reasons(flash), ["empty", "bad-magic"]);
});

test("cache rejects a record cut off by the end of its slot as truncated", (t) => {
  // A record of a 4096-byte slot (content of 600 bytes) copied into a 512-byte slot.
  const big = { ...A, assignedHub: "h".repeat(560) + ".azure-devices.net" };
  const record = craftRecord({ content: contentOf(big), sequence: 3 });
  t.true(record.length > SECTOR);
  const flash = newFlash();
  open(flash).save(A);
  flash.raw.set(record.subarray(0, SECTOR), SECTOR);
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, A, "the other slot's record is used");
  t.deepEqual(loaded.rejected.map((r) => [r.slot, r.reason, r.sequence]), [[1, "truncated", 3]]);
});

test("cache rejects a torn record (no commit mark) before decrypting it", (t) => {
  const flash = newFlash();
  const record = craftRecord({ content: contentOf(A), sequence: 1 });
  flash.raw.set(record.subarray(0, record.length - 4), 0);
  t.deepEqual(reasons(flash), ["torn", "empty"]);
  flash.raw.set([0x44, 0x4f], record.length - 4);
  t.deepEqual(reasons(flash), ["torn", "empty"], "a partly written commit mark");
});

test("cache rejects a record whose clear header differs from the sealed one as header-mismatch", (t) => {
  const flash = newFlash();
  open(flash).save(A);
  flash.raw[11] ^= 0x02; // sequence 1 -> 3 in the clear only
  const loaded = open(flash).load();
  t.deepEqual(loaded.rejected.map((r) => [r.reason, r.sequence]), [["header-mismatch", 3], ["empty", undefined]]);
});

test("cache rejects authentic but malformed content as malformed-content", (t) => {
  const bad = [
    "not json",
    "[1,2]",
    JSON.stringify({ ...A, registrationId: "sensor-0043" }),
    JSON.stringify({ ...A, writtenAt: -1 }),
    JSON.stringify({ ...A, assignedHub: "" }),
    JSON.stringify({ ...A, substatus: 5 }),
  ];
  for (const content of bad) {
    const flash = newFlash();
    flash.raw.set(craftRecord({ content, sequence: 1 }), 0);
    t.deepEqual(reasons(flash), ["malformed-content", "empty"], content);
  }
  const emptyObject = craftRecord({ content: "{}", sequence: 1 });
  t.is(emptyObject.length, CACHE_RECORD_OVERHEAD_BYTES + 2, "the smallest record");
  const invalidUtf8 = craftRecord({ content: Uint8Array.of(0x7b, 0xc0, 0xaf, 0x7d), sequence: 1 });
  for (const record of [emptyObject, invalidUtf8]) {
    const flash = newFlash();
    flash.raw.set(record, 0);
    t.deepEqual(reasons(flash), ["malformed-content", "empty"]);
  }
});

// ---------------------------------------------------------------------------------------------
// Power cuts

/** Bytes written and erases done by one save of `next` over `image`. */
function profile(image: Uint8Array, next: CachedAssignment, sectorSize = SECTOR, sectorCount = 2, extra: Partial<CredentialCacheOptions> = {}) {
  const probe = new MemoryFlash({ sectorSize, sectorCount, image });
  open(probe, extra).save(next);
  return { bytes: probe.stats.bytesWritten, erases: probe.stats.erases };
}

/** An assertion the helpers call: ava's `t.is`, or a silent one. */
type Expect = (actual: unknown, expected: unknown, message: string) => void;

function cutEveryByte(
  expect: Expect,
  image: Uint8Array,
  next: CachedAssignment,
  previousHub: string | undefined,
  previousSequence: number | undefined,
  sectorSize = SECTOR,
  sectorCount = 2,
  extra: Partial<CredentialCacheOptions> = {},
): number {
  const { bytes, erases } = profile(image, next, sectorSize, sectorCount, extra);
  let cuts = 0;
  for (let n = 0; n <= bytes; n++) {
    const flash = new MemoryFlash({ sectorSize, sectorCount, image });
    flash.cutPowerAfterBytes(n);
    let caught: unknown;
    try {
      open(flash, extra).save(next);
    } catch (error) {
      caught = error;
    }
    expect(code(caught), n < bytes ? "POWER_CUT" : undefined, `save with a cut after ${n} bytes`);
    flash.reboot();
    const loaded = open(flash, extra).load();
    const expectedHub = n < bytes ? previousHub : next.assignedHub;
    expect(loaded.assignment?.assignedHub, expectedHub, `hub after a cut at byte ${n} of ${bytes}`);
    if (n < bytes) {
      expect(loaded.sequence, previousSequence, `sequence after a cut at byte ${n}`);
      // The commit mark goes down last, so a torn write is recognised before any decryption.
      const damage = loaded.rejected.filter((r) => ["foreign-or-tampered", "header-mismatch", "malformed-content"].includes(r.reason));
      expect(damage.length, 0, `a cut at byte ${n} is recognised from the header or commit mark alone`);
    }
    cuts++;
  }
  for (let e = 0; e < erases; e++) {
    for (const erased of [0, 1, 4, 11, 12, 13, sectorSize >> 1, sectorSize - 1, sectorSize]) {
      const flash = new MemoryFlash({ sectorSize, sectorCount, image });
      flash.cutPowerDuringErase(e, erased);
      let caught: unknown;
      try {
        open(flash, extra).save(next);
      } catch (error) {
        caught = error;
      }
      expect(code(caught), "POWER_CUT", `save with erase ${e} cut after ${erased} bytes`);
      flash.reboot();
      expect(hubOf(flash, extra), previousHub, `hub after erase ${e} was cut after ${erased} bytes`);
      cuts++;
    }
  }
  return cuts;
}

test("cache power cut at every byte of a save and during its erase: first save ever leaves empty or the new record", (t) => {
  const cuts = cutEveryByte((a, b, m) => t.is(a, b, m), newFlash().snapshot(), A, undefined, undefined);
  t.log(`${cuts} power cuts`);
});

test("cache power cut at every byte of a save and during its erase: one previous record survives", (t) => {
  const flash = newFlash();
  open(flash).save(A);
  cutEveryByte((a, b, m) => t.is(a, b, m), flash.snapshot(), B, A.assignedHub, 1);
});

test("cache power cut at every byte of a save over the older of two records: the newer survives, the older never comes back", (t) => {
  const cuts = cutEveryByte((a, b, m) => t.is(a, b, m), twoRecords().snapshot(), C, B.assignedHub, 2);
  t.log(`${cuts} power cuts`);
});

test("cache power cut with multi-sector slots away from the start of the flash, at every byte and every erase", (t) => {
  // 128-byte sectors, 2 per slot, slots from sector 1: a record spans both sectors of its slot.
  const extra = { firstSector: 1, sectorsPerSlot: 2 };
  const flash = new MemoryFlash({ sectorSize: 128, sectorCount: 6 });
  flash.raw.fill(0x5a, 0, 128);
  flash.raw.fill(0xa5, 5 * 128);
  open(flash, extra).save(A);
  open(flash, extra).save(B);
  t.is(flash.stats.erases, 4);
  const image = flash.snapshot();
  t.is(profile(image, C, 128, 6, extra).erases, 2);
  cutEveryByte((a, b, m) => t.is(a, b, m), image, C, B.assignedHub, 2, 128, 6, extra);
  open(flash, extra).save(C);
  t.true(flash.raw.subarray(0, 128).every((b) => b === 0x5a), "sector 0 is not the cache's");
  t.true(flash.raw.subarray(5 * 128).every((b) => b === 0xa5), "sector 5 is not the cache's");
});

test("cache after a torn save, the next save goes to the torn slot and both records are then valid", (t) => {
  const flash = newFlash();
  open(flash).save(A);
  flash.cutPowerAfterBytes(100);
  t.is(code(t.throws(() => open(flash).save(B))), "POWER_CUT");
  t.is(code(t.throws(() => flash.read(0, 1))), "POWER_CUT", "a dead flash stays dead until reboot");
  flash.reboot();
  t.deepEqual(open(flash).load().rejected.map((r) => [r.slot, r.reason]), [[1, "torn"]]);
  t.deepEqual(open(flash).save(C), { slot: 1, sequence: 2 });
  const loaded = open(flash).load();
  t.deepEqual(loaded.assignment, C);
  t.deepEqual(loaded.rejected, []);
});

test("cache invalidate empties the cache, erasing the older slot first", (t) => {
  const flash = twoRecords();
  t.deepEqual(open(flash).invalidate(), { erased: [0, 1] });
  const loaded = open(flash).load();
  t.is(loaded.assignment, undefined);
  t.deepEqual(loaded.rejected.map((r) => r.reason), ["empty", "empty"]);
  t.deepEqual(open(flash).invalidate(), { erased: [] }, "erased slots are not erased again");
  t.deepEqual(open(flash).save(C), { slot: 0, sequence: 1 }, "sequence restarts on an empty cache");
  const other = newFlash();
  const cache = open(other);
  cache.save(A);
  cache.save(B);
  cache.save(C); // newest in slot 0
  t.deepEqual(cache.invalidate(), { erased: [1, 0] });
});

test("cache power cut during each erase of invalidate leaves the newest record or nothing, never the older one", (t) => {
  const image = twoRecords().snapshot();
  for (const e of [0, 1]) {
    for (const erased of [0, 1, 12, SECTOR >> 1, SECTOR]) {
      const flash = newFlash(image);
      flash.cutPowerDuringErase(e, erased);
      t.is(code(t.throws(() => open(flash).invalidate())), "POWER_CUT");
      flash.reboot();
      const hub = hubOf(flash);
      const expected = e === 0 || erased === 0 ? B.assignedHub : undefined;
      t.is(hub, expected, `invalidate with erase ${e} cut after ${erased} bytes`);
      open(flash).invalidate();
      t.is(hubOf(flash), undefined, "a second invalidate finishes the job");
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Bit flips

/** Flips every bit of the record in slot `slot` in turn; returns the reason histogram. */
function flipEveryBit(
  expect: Expect,
  flash: MemoryFlash,
  slot: 0 | 1,
  length: number,
  survivorHub: string | undefined,
): Record<string, number> {
  const cache = open(flash);
  const histogram: Record<string, number> = {};
  for (let bit = 0; bit < length * 8; bit++) {
    const at = slot * SECTOR + (bit >> 3);
    flash.raw[at] ^= 1 << (bit & 7);
    const loaded = cache.load();
    flash.raw[at] ^= 1 << (bit & 7);
    expect(loaded.assignment?.assignedHub, survivorHub, `hub with bit ${bit} flipped`);
    const mine = loaded.rejected.filter((r) => r.slot === slot);
    expect(mine.length, 1, `slot ${slot} rejected with bit ${bit} flipped`);
    const reason = mine[0].reason;
    expect(reason === "empty", false, `bit ${bit}: a damaged record is never reported empty`);
    histogram[reason] = (histogram[reason] ?? 0) + 1;
  }
  return histogram;
}

test("cache every single-bit flip of the newest record: rejected with a reason, the other slot's record is used", (t) => {
  const flash = twoRecords();
  const length = flash.stats.bytesWritten / 2;
  const histogram = flipEveryBit((a, b, m) => t.is(a, b, m), flash, 1, length, A.assignedHub);
  t.is(Object.values(histogram).reduce((a, b) => a + b, 0), length * 8);
  t.is(histogram["torn"] >= 32, true, "every commit-mark bit gives torn");
  t.is(histogram["header-mismatch"], 40, "reserved byte and sequence are caught by the sealed header copy");
  t.is(histogram["bad-magic"], 32);
  t.is(histogram["unsupported-version"], 8);
  t.log(JSON.stringify(histogram));
  t.is(hubOf(flash), B.assignedHub, "flips were undone");
});

test("cache every single-bit flip of the only record: rejected, nothing loads, nothing throws", (t) => {
  const flash = newFlash();
  open(flash).save(A);
  const histogram = flipEveryBit((a, b, m) => t.is(a, b, m), flash, 0, flash.stats.bytesWritten, undefined);
  t.true(histogram["foreign-or-tampered"] > 0);
});

// ---------------------------------------------------------------------------------------------
// Limits and misuse

test("cache oversize content is a UsageError OVERSIZE before the flash is touched", (t) => {
  const flash = twoRecords();
  const before = flash.snapshot();
  const stats = { ...flash.stats };
  const huge = { ...C, assignedHub: "h".repeat(CACHE_MAX_CONTENT_BYTES) };
  t.is(code(t.throws(() => open(flash).save(huge))), "OVERSIZE");
  t.deepEqual(flash.stats, stats);
  t.deepEqual(flash.snapshot(), before);
  t.is(hubOf(flash), B.assignedHub);
});

test("cache a record larger than its slot is a UsageError OVERSIZE before anything is erased", (t) => {
  const flash = new MemoryFlash({ sectorSize: 256, sectorCount: 2 });
  open(flash).save(A);
  const before = flash.snapshot();
  const erases = flash.stats.erases;
  const big = { ...C, assignedHub: "h".repeat(200) };
  const error = t.throws(() => open(flash).save(big));
  t.is(code(error), "OVERSIZE");
  t.regex(String(error), /does not fit a slot of 256 bytes/);
  t.is(flash.stats.erases, erases);
  t.deepEqual(flash.snapshot(), before);
});

test("cache options and arguments are checked (layout, key, registration id, closed cache)", (t) => {
  const flash = newFlash();
  t.is(code(t.throws(() => open(flash, { sectorsPerSlot: 2 }))), "INVALID_ARGUMENT", "two slots of two sectors in two sectors");
  t.is(code(t.throws(() => open(new MemoryFlash({ sectorSize: 64, sectorCount: 2 })))), "INVALID_ARGUMENT", "slot smaller than a record");
  t.is(code(t.throws(() => open(flash, { registrationId: "" }))), "INVALID_ARGUMENT");
  const badKey = t.throws(() => open(flash, { deviceKey: "not!base64==" }));
  t.is(code(badKey), "MALFORMED_BASE64");
  t.false(String(badKey).includes("not!base64"), "the key is not repeated in the message");
  t.is(code(t.throws(() => open(flash).save({ ...A, registrationId: "sensor-0043" }))), "INVALID_ARGUMENT");
  t.is(code(t.throws(() => open(flash).save({ ...A, writtenAt: Number.NaN }))), "INVALID_ARGUMENT");
  t.is(code(t.throws(() => open(flash, { random: () => undefined }).save(A))), "INVALID_ARGUMENT", "a random source that fills nothing");
  t.is(flash.stats.erases, 0, "no refused save touched the flash");
  const cache = open(flash);
  cache.close();
  cache.close();
  t.is(code(t.throws(() => cache.load())), "STOPPED");
  t.is(code(t.throws(() => cache.save(A))), "STOPPED");
});

test("cache rejection details never carry the key or record bytes", (t) => {
  const flash = twoRecords();
  const keyHex = bytesToHex(Buffer.from(KEY, "base64"));
  const derivedHex = bytesToHex(deriveCacheKey(nodeCrypto, Buffer.from(KEY, "base64"), REG));
  for (let bit = 0; bit < 64 * 8; bit += 7) {
    flash.raw[bit >> 3] ^= 1 << (bit & 7);
    for (const r of open(flash).load().rejected) {
      for (const secret of [KEY, keyHex, derivedHex]) t.false(r.detail.includes(secret));
      t.true(r.detail.length < 120);
    }
    flash.raw[bit >> 3] ^= 1 << (bit & 7);
  }
});

// ---------------------------------------------------------------------------------------------
// The flash simulators

test("MemoryFlash is NOR: writes clear bits only (strict refuses to set one), erase sets 0xFF", (t) => {
  const strict = new MemoryFlash({ sectorSize: 16, sectorCount: 2 });
  strict.write(3, Uint8Array.of(0x0f));
  t.is(code(t.throws(() => strict.write(2, Uint8Array.of(0x00, 0xf0)))), "FLASH_WRITE_SETS_BITS");
  t.deepEqual([...strict.read(2, 2)], [0xff, 0x0f], "a refused write writes nothing");
  strict.erase(0);
  t.deepEqual([...strict.read(0, 16)], new Array(16).fill(0xff));
  const loose = new MemoryFlash({ sectorSize: 16, sectorCount: 2, strict: false });
  loose.write(3, Uint8Array.of(0x0f));
  loose.write(3, Uint8Array.of(0xf3));
  t.is(loose.read(3, 1)[0], 0x03, "a real chip ANDs");
  t.is(code(t.throws(() => loose.read(30, 3))), "INVALID_ARGUMENT");
  t.is(code(t.throws(() => loose.erase(2))), "INVALID_ARGUMENT");
});

test("MemoryFlash power cut after n bytes spans writes; erase cut leaves a prefix erased", (t) => {
  const flash = new MemoryFlash({ sectorSize: 8, sectorCount: 2 });
  flash.cutPowerAfterBytes(5);
  flash.write(0, Uint8Array.of(1, 2, 3));
  t.is(code(t.throws(() => flash.write(3, Uint8Array.of(4, 5, 6, 7)))), "POWER_CUT");
  t.true(flash.dead);
  t.is(code(t.throws(() => flash.erase(0))), "POWER_CUT");
  flash.reboot();
  t.deepEqual([...flash.read(0, 8)], [1, 2, 3, 4, 5, 0xff, 0xff, 0xff]);
  flash.cutPowerDuringErase(1, 3);
  flash.erase(1);
  t.is(code(t.throws(() => flash.erase(0))), "POWER_CUT");
  flash.reboot();
  t.deepEqual([...flash.read(0, 8)], [0xff, 0xff, 0xff, 4, 5, 0xff, 0xff, 0xff]);
});

function tmp(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "nor-flash-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("NorFlashFile creates an erased file, ANDs writes, erases sectors and persists across reopen", (t) => {
  const path = join(tmp(t), "flash.bin");
  const flash = new NorFlashFile({ path, sectorSize: 64, sectorCount: 4, sync: "never" });
  t.is(statSync(path).size, 256);
  t.true(readFileSync(path).every((b) => b === 0xff));
  flash.write(70, Uint8Array.of(0x0f, 0x33));
  flash.write(70, Uint8Array.of(0xf3));
  t.deepEqual([...flash.read(70, 2)], [0x03, 0x33]);
  flash.close();
  flash.close();
  t.is(code(t.throws(() => flash.read(0, 1))), "STOPPED");
  const again = new NorFlashFile({ path, sectorSize: 64, sectorCount: 4 });
  t.deepEqual([...again.read(70, 2)], [0x03, 0x33]);
  again.erase(1);
  t.true(again.read(64, 64).every((b) => b === 0xff));
  const strict = new NorFlashFile({ path, sectorSize: 64, sectorCount: 4, strict: true });
  strict.write(0, Uint8Array.of(0));
  t.is(code(t.throws(() => strict.write(0, Uint8Array.of(1)))), "FLASH_WRITE_SETS_BITS");
  t.is(code(t.throws(() => new NorFlashFile({ path, sectorSize: 64, sectorCount: 5 }))), "INVALID_ARGUMENT");
  again.close();
  strict.close();
});

test("NorFlashFile holds the same bytes as MemoryFlash after the same saves, and the cache persists across reopen", (t) => {
  const path = join(tmp(t), "flash.bin");
  const file = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
  const memory = newFlash();
  for (const flash of [file, memory]) {
    const cache = open(flash);
    cache.save(A);
    cache.save(B);
    cache.save(C);
  }
  file.close();
  t.is(bytesToHex(readFileSync(path)), bytesToHex(memory.snapshot()));
  const reopened = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
  const loaded = open(reopened).load();
  t.deepEqual(loaded.assignment, C);
  t.is(loaded.sequence, 3);
  reopened.close();
});

test("NorFlashFile power cut at a chosen write: the device is dead until reopened, then the previous record loads", (t) => {
  const path = join(tmp(t), "flash.bin");
  const flash = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
  open(flash).save(A);
  const { bytes } = profile(new Uint8Array(readFileSync(path)), B);
  for (const n of [0, 1, 12, 100, bytes - 4, bytes - 1]) {
    const device = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
    device.cutPowerAfterBytes(n);
    t.is(code(t.throws(() => open(device).save(B))), "POWER_CUT", `cut after ${n}`);
    t.true(device.dead);
    t.is(code(t.throws(() => device.read(0, 4))), "POWER_CUT");
    device.close();
    const rebooted = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
    t.is(hubOf(rebooted), A.assignedHub, `after a cut at byte ${n}`);
    t.is(readFileSync(path).subarray(SECTOR, SECTOR + n + 1).filter((b) => b !== 0xff).length > 0, n > 0, "the partial write reached the file");
    rebooted.close();
  }
  const eraseCut = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
  eraseCut.cutPowerDuringErase(0, 20);
  t.is(code(t.throws(() => open(eraseCut).save(B))), "POWER_CUT");
  eraseCut.close();
  const last = new NorFlashFile({ path, sectorSize: SECTOR, sectorCount: 2 });
  t.is(hubOf(last), A.assignedHub);
  t.deepEqual(open(last).save(B), { slot: 1, sequence: 2 });
  t.is(hubOf(last), B.assignedHub);
  last.close();
});

test("NorFlashFile reports an unusable path as PeerError STORAGE", (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, "file"), "x");
  const error = t.throws(() => new NorFlashFile({ path: join(dir, "file", "flash.bin") }));
  t.is(code(error), "STORAGE");
});

// ---------------------------------------------------------------------------------------------
// Property: random saves, invalidations and power cuts never lose the last committed record

type Op =
  | { kind: "save"; cut: { bytes: number } | { erase: number; erased: number } | null }
  | { kind: "invalidate"; cut: { erase: number; erased: number } | null };

const cutArb = fc.oneof(
  { weight: 2, arbitrary: fc.constant(null) },
  { weight: 3, arbitrary: fc.record({ bytes: fc.nat({ max: 260 }) }) },
  { weight: 1, arbitrary: fc.record({ erase: fc.constant(0), erased: fc.nat({ max: SECTOR }) }) },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("save" as const), cut: cutArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("invalidate" as const),
      cut: fc.option(fc.record({ erase: fc.nat({ max: 1 }), erased: fc.nat({ max: SECTOR }) }), { nil: null }),
    }),
  },
);

test("cache property: random saves, invalidations and power cuts never lose the last committed record", (t) => {
  let steps = 0;
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 20 }), fc.nat(), (ops, seed) => {
      const flash = newFlash();
      let committed: string | undefined;
      let lastSequence = 0;
      ops.forEach((op, i) => {
        steps++;
        const cache = open(flash, { random: countingRandom(seed + i) });
        if (op.cut && "bytes" in op.cut) flash.cutPowerAfterBytes(op.cut.bytes);
        else if (op.cut) flash.cutPowerDuringErase(op.cut.erase, op.cut.erased);
        const hub = `hub-${i}.azure-devices.net`;
        let cut = false;
        try {
          if (op.kind === "save") {
            const result = cache.save({ ...A, assignedHub: hub });
            if (committed !== undefined && !sequenceIsNewer(result.sequence, lastSequence)) throw new Error("sequence went backwards");
            lastSequence = result.sequence;
          } else cache.invalidate();
        } catch (error) {
          if (code(error) !== "POWER_CUT") throw error;
          cut = true;
        }
        flash.reboot();
        const loaded = open(flash).load();
        const got = loaded.assignment?.assignedHub;
        const target = op.kind === "save" ? hub : undefined;
        const allowed = cut ? [committed, target] : [target];
        if (!allowed.includes(got)) {
          throw new Error(`after ${op.kind}${cut ? " (cut)" : ""}: loaded ${got}, allowed ${allowed.join(" or ")}`);
        }
        for (const r of loaded.rejected) {
          // Damage from a cut never gets past the commit mark: nothing authentic is ever mangled.
          if (r.reason === "header-mismatch" || r.reason === "malformed-content") throw new Error(`unexpected rejection ${r.reason}`);
        }
        committed = got;
        if (loaded.sequence !== undefined) lastSequence = loaded.sequence;
      });
    }),
    { numRuns: 300, seed: 20260101 },
  );
  t.log(`${steps} operations`);
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// The same record on XS

let xsRun: Promise<XsRun> | undefined;
function cacheOnXs(): Promise<XsRun> {
  xsRun ??= runXs(join(projectRoot, "build", "test", "xs", "cache.xs.js"));
  return xsRun;
}

test("cache on XS: a record sealed there with a fixed nonce is byte-for-byte Node's, and opens on Node", async (t) => {
  const run = await cacheOnXs();
  t.deepEqual(run.failures, []);
  const xsHex = run.emitted.get("cache.fixed-nonce-record");
  t.is(typeof xsHex, "string");
  const flash = newFlash();
  const fixedNonce = (bytes: Uint8Array): void => {
    for (let i = 0; i < bytes.length; i++) bytes[i] = i;
  };
  open(flash, { random: fixedNonce }).save(A);
  const nodeHex = bytesToHex(flash.read(0, flash.stats.bytesWritten));
  t.is(xsHex, nodeHex);
  const fromXs = newFlash();
  fromXs.raw.set(hexToBytes(xsHex as string), 0);
  t.deepEqual(open(fromXs).load().assignment, A);
});

test("cache on XS: the save size and the bit-flip reasons are the same as on Node", async (t) => {
  const run = await cacheOnXs();
  const flash = twoRecords();
  t.is(run.emitted.get("cache.save-bytes"), profile(flash.snapshot(), C).bytes);
  const length = flash.stats.bytesWritten / 2;
  const histogram = flipEveryBit(() => undefined, flash, 1, length, A.assignedHub);
  t.deepEqual(run.emitted.get("cache.bitflip-reasons"), histogram);
});
