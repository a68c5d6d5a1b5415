// The credential cache on XS: tweetnacl's secretbox, the record format and the power-cut and
// bit-flip guarantees, on the engine the device runs. test/credential-cache.test.ts runs the same
// scenarios (and many more) on Node, and compares what this file emits with Node's own bytes.
import { deepEqual, emit, equal, ok, run, test, throwsCode } from "./harness.js";
import { CredentialCache } from "../../modules/credential-cache.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import { portableCrypto } from "../../modules/sha256.js";
import { bytesToHex } from "../vectors/crypto.js";
import { A, B, C, KEY, OTHER_KEY, REG, SECTOR, countingRandom } from "../vectors/cache.js";

function open(flash: MemoryFlash, deviceKey = KEY, registrationId = REG, seed = 1): CredentialCache {
  return new CredentialCache({ flash, random: countingRandom(seed), deviceKey, registrationId, crypto: portableCrypto });
}

function hubOf(flash: MemoryFlash): string | undefined {
  return open(flash).load().assignment?.assignedHub;
}

test("round trip: save then load returns the assignment from slot 0, sequence 1", () => {
  const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2 });
  const saved = open(flash).save(A);
  deepEqual(saved, { slot: 0, sequence: 1 }, "save result");
  const loaded = open(flash).load();
  deepEqual(loaded.assignment, A, "assignment after reboot");
  equal(loaded.sequence, 1, "sequence");
  deepEqual(loaded.rejected.map((r) => r.reason), ["empty"], "slot 1 is empty");
});

test("saves alternate slots and the newest wins", () => {
  const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2 });
  const cache = open(flash);
  const slots = [A, B, C, A].map((a) => cache.save(a));
  deepEqual(slots, [{ slot: 0, sequence: 1 }, { slot: 1, sequence: 2 }, { slot: 0, sequence: 3 }, { slot: 1, sequence: 4 }]);
  const loaded = open(flash).load();
  deepEqual(loaded.assignment, A);
  equal(loaded.slot, 1, "slot");
  equal(loaded.rejected.length, 0, "no rejection when both records are valid");
});

/** Two records (A seq 1 in slot 0, B seq 2 in slot 1): the next save overwrites A's slot. */
function twoRecords(): MemoryFlash {
  const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2 });
  const cache = open(flash);
  cache.save(A);
  cache.save(B);
  return flash;
}

test("power cut at every byte offset of a save leaves the previous record, never the older one", () => {
  const base = twoRecords().snapshot();
  const probe = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2, image: base });
  open(probe).save(C);
  const total = probe.stats.bytesWritten;
  ok(total > 100, "a save writes a whole record");
  for (let n = 0; n < total; n++) {
    const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2, image: base });
    flash.cutPowerAfterBytes(n);
    throwsCode(() => open(flash).save(C), "POWER_CUT", `save cut after ${n} bytes`);
    flash.reboot();
    const loaded = open(flash).load();
    equal(loaded.assignment?.assignedHub, B.assignedHub, `hub after a cut at byte ${n}`);
    equal(loaded.sequence, 2, `sequence after a cut at byte ${n}`);
  }
  const done = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2, image: base });
  done.cutPowerAfterBytes(total);
  open(done).save(C);
  equal(hubOf(done), C.assignedHub, "a cut just after the last byte leaves the new record");
  emit("cache.save-bytes", total);
});

test("power cut during the erase of a save leaves the previous record", () => {
  const base = twoRecords().snapshot();
  for (const erased of [0, 1, 11, 12, SECTOR >> 1, SECTOR - 1, SECTOR]) {
    const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2, image: base });
    flash.cutPowerDuringErase(0, erased);
    throwsCode(() => open(flash).save(C), "POWER_CUT", `save cut after erasing ${erased} bytes`);
    flash.reboot();
    equal(hubOf(flash), B.assignedHub, `hub after an erase cut at ${erased}`);
  }
});

test("every single-bit flip of the newest record is rejected and the other slot's record is used", () => {
  const flash = twoRecords();
  const length = flash.stats.bytesWritten / 2;
  const reasons: Record<string, number> = {};
  const cache = open(flash);
  for (let bit = 0; bit < length * 8; bit++) {
    const at = SECTOR + (bit >> 3);
    flash.raw[at] ^= 1 << (bit & 7);
    const loaded = cache.load();
    flash.raw[at] ^= 1 << (bit & 7);
    equal(loaded.assignment?.assignedHub, A.assignedHub, `hub with bit ${bit} flipped`);
    equal(loaded.rejected.length, 1, `one rejection with bit ${bit} flipped`);
    equal(loaded.rejected[0].slot, 1, `rejected slot with bit ${bit} flipped`);
    const reason = loaded.rejected[0].reason;
    reasons[reason] = (reasons[reason] ?? 0) + 1;
  }
  emit("cache.bitflip-reasons", reasons);
  ok((reasons["foreign-or-tampered"] ?? 0) > 0 && (reasons["torn"] ?? 0) > 0, "flips reach both box and commit mark");
});

test("a record sealed under another device key or registration id is foreign-or-tampered", () => {
  const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2 });
  open(flash).save(A);
  const foreignKey = open(flash, OTHER_KEY).load();
  equal(foreignKey.assignment, undefined, "no assignment under another key");
  deepEqual(foreignKey.rejected.map((r) => r.reason), ["foreign-or-tampered", "empty"]);
  const foreignId = open(flash, KEY, "sensor-0043").load();
  deepEqual(foreignId.rejected.map((r) => r.reason), ["foreign-or-tampered", "empty"]);
});

test("invalidate empties the cache", () => {
  const flash = twoRecords();
  deepEqual(open(flash).invalidate(), { erased: [0, 1] }, "older slot first");
  const loaded = open(flash).load();
  equal(loaded.assignment, undefined);
  deepEqual(loaded.rejected.map((r) => r.reason), ["empty", "empty"]);
});

test("cross-check: a record sealed with a fixed nonce (emitted for the Node side)", () => {
  const flash = new MemoryFlash({ sectorSize: SECTOR, sectorCount: 2 });
  const fixedNonce = (bytes: Uint8Array): void => {
    for (let i = 0; i < bytes.length; i++) bytes[i] = i;
  };
  new CredentialCache({ flash, random: fixedNonce, deviceKey: KEY, registrationId: REG, crypto: portableCrypto }).save(A);
  const record = flash.read(0, flash.stats.bytesWritten);
  emit("cache.fixed-nonce-record", bytesToHex(record));
  deepEqual(open(flash).load().assignment, A, "the record opens on XS");
});

await run("credential-cache");
