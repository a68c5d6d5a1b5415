/**
 * NOR flash in memory, and the power-cut hook the simulators share: for tests on Node and XS and
 * for desktop fleets. Kept apart from flash.ts so that firmware, which has real flash, does not
 * carry it (modules/manifest.json leaves it out).
 */
import { check, PeerError, UsageError } from "./errors.js";
import { checkFlashGeometry, checkFlashRange, checkFlashSector, FLASH_ERASED_BYTE, firstBitSettingByte, type FlashPort, type FlashStats } from "./flash.js";

/**
 * The power-cut hook shared by the simulators. Arm it, run the code under test, and at the
 * chosen point the write or erase in progress stops part-way, the call throws PeerError
 * POWER_CUT, and every later call throws the same until the device is "rebooted" (`revive`, or a
 * new instance over the same storage).
 *
 * - `cutAfterBytes(n)`: n more bytes get programmed (counted across writes), then the power goes.
 *   A write that would program byte n+1 programs only up to byte n and throws. If the code never
 *   writes that much the switch stays armed.
 * - `cutDuringErase(nth, erasedBytes)`: the nth erase from now (0 = the next one) sets only the
 *   first `erasedBytes` bytes of its sector to 0xFF, then the power goes. `erasedBytes` 0 is a cut
 *   just before the erase; `sectorSize` is a cut just after it.
 */
export class PowerCutSwitch {
  #bytesLeft: number | undefined;
  #erasesLeft: number | undefined;
  #erasedBytes = 0;
  #dead = false;

  /** True once the power has been cut (until `revive`). */
  get dead(): boolean {
    return this.#dead;
  }

  /** @throws UsageError INVALID_ARGUMENT unless `bytes` is a non-negative integer. */
  cutAfterBytes(bytes: number): void {
    check(Number.isInteger(bytes) && bytes >= 0, `cutAfterBytes needs a non-negative integer, got ${bytes}`);
    this.#bytesLeft = bytes;
  }

  /** @throws UsageError INVALID_ARGUMENT on a negative or fractional argument. */
  cutDuringErase(nth: number, erasedBytes: number): void {
    check(Number.isInteger(nth) && nth >= 0, `cutDuringErase needs a non-negative erase index, got ${nth}`);
    check(Number.isInteger(erasedBytes) && erasedBytes >= 0, `cutDuringErase needs a non-negative byte count, got ${erasedBytes}`);
    this.#erasesLeft = nth;
    this.#erasedBytes = erasedBytes;
  }

  /** Disarms the switch and brings the power back. */
  revive(): void {
    this.#bytesLeft = undefined;
    this.#erasesLeft = undefined;
    this.#dead = false;
  }

  /** @throws PeerError POWER_CUT once the power has been cut. */
  assertPowered(): void {
    if (this.#dead) throw powerCut("the flash has no power since a simulated cut; reboot (reopen) it");
  }

  /**
   * Call before programming `length` bytes: returns how many of them get programmed. When that is
   * less than `length`, program them, then call `cut()`.
   */
  writeAllowance(length: number): number {
    this.assertPowered();
    if (this.#bytesLeft === undefined || length <= this.#bytesLeft) {
      if (this.#bytesLeft !== undefined) this.#bytesLeft -= length;
      return length;
    }
    const allowed = this.#bytesLeft;
    this.#bytesLeft = 0;
    return allowed;
  }

  /**
   * Call before erasing a sector of `sectorSize` bytes: returns how many leading bytes get erased
   * and whether this erase is the one to cut. When `eraseCut` is true, erase those bytes, then
   * call `cut()` (even when all of them were erased: the power still goes).
   */
  eraseAllowance(sectorSize: number): { bytes: number; eraseCut: boolean } {
    this.assertPowered();
    if (this.#erasesLeft === undefined) return { bytes: sectorSize, eraseCut: false };
    if (this.#erasesLeft > 0) {
      this.#erasesLeft--;
      return { bytes: sectorSize, eraseCut: false };
    }
    this.#erasesLeft = undefined;
    return { bytes: Math.min(this.#erasedBytes, sectorSize), eraseCut: true };
  }

  /** Cuts the power now. @throws PeerError POWER_CUT always. */
  cut(where: string): never {
    this.#dead = true;
    throw powerCut(`simulated power cut ${where}`);
  }
}

function powerCut(message: string): PeerError {
  return new PeerError("POWER_CUT", message);
}

export interface MemoryFlashOptions {
  /** Bytes per sector; 4096 like the ESP32 when omitted. */
  readonly sectorSize?: number;
  /** Number of sectors; 2 when omitted. */
  readonly sectorCount?: number;
  /**
   * true (the default): a write that would set a bit throws UsageError FLASH_WRITE_SETS_BITS and
   * writes nothing, so a caller that forgot to erase is caught in tests. false: the write ANDs,
   * as a real NOR chip does silently.
   */
  readonly strict?: boolean;
  /** Initial contents (copied); its length must be sectorSize * sectorCount. Erased when omitted. */
  readonly image?: Uint8Array;
}

/** NOR flash in memory, for tests on Node and XS, with the power-cut hook. */
export class MemoryFlash implements FlashPort {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly strict: boolean;
  readonly stats: FlashStats = { writes: 0, bytesWritten: 0, erases: 0 };
  #bytes: Uint8Array;
  #power = new PowerCutSwitch();

  /** @throws UsageError INVALID_ARGUMENT on a bad geometry or an image of the wrong size. */
  constructor(options: MemoryFlashOptions = {}) {
    this.sectorSize = options.sectorSize ?? 4096;
    this.sectorCount = options.sectorCount ?? 2;
    checkFlashGeometry(this.sectorSize, this.sectorCount);
    this.strict = options.strict ?? true;
    const size = this.sectorSize * this.sectorCount;
    if (options.image) {
      check(options.image.length === size, `flash image must be ${size} bytes, got ${options.image.length}`);
      this.#bytes = options.image.slice();
    } else {
      this.#bytes = new Uint8Array(size).fill(FLASH_ERASED_BYTE);
    }
  }

  /**
   * The live backing store, for fault injection in tests (flipping a bit the way a worn or
   * disturbed cell would, which `write` cannot do). Changes bypass NOR rules and the power switch.
   */
  get raw(): Uint8Array {
    return this.#bytes;
  }

  /** A copy of the whole region. */
  snapshot(): Uint8Array {
    return this.#bytes.slice();
  }

  /** True once a simulated power cut happened (until `reboot`). */
  get dead(): boolean {
    return this.#power.dead;
  }

  /** See PowerCutSwitch.cutAfterBytes. */
  cutPowerAfterBytes(bytes: number): void {
    this.#power.cutAfterBytes(bytes);
  }

  /** See PowerCutSwitch.cutDuringErase; `erasedBytes` defaults to half a sector. */
  cutPowerDuringErase(nth = 0, erasedBytes = this.sectorSize >> 1): void {
    this.#power.cutDuringErase(nth, erasedBytes);
  }

  /** Power comes back: the contents stay as the cut left them, the switch is disarmed. */
  reboot(): void {
    this.#power.revive();
  }

  read(offset: number, length: number): Uint8Array {
    checkFlashRange(this, offset, length);
    this.#power.assertPowered();
    return this.#bytes.slice(offset, offset + length);
  }

  write(offset: number, bytes: Uint8Array): void {
    checkFlashRange(this, offset, bytes.length);
    this.#power.assertPowered();
    if (this.strict) {
      const bad = firstBitSettingByte(this.#bytes, offset, bytes);
      if (bad >= 0) {
        throw new UsageError(
          "FLASH_WRITE_SETS_BITS",
          `flash write at offset ${offset + bad} would set bits that only an erase can set: erase the sector first`,
        );
      }
    }
    const allowed = this.#power.writeAllowance(bytes.length);
    for (let i = 0; i < allowed; i++) this.#bytes[offset + i] &= bytes[i];
    this.stats.writes++;
    this.stats.bytesWritten += allowed;
    if (allowed < bytes.length) this.#power.cut(`after ${allowed} of ${bytes.length} bytes of a write at offset ${offset}`);
  }

  erase(sector: number): void {
    checkFlashSector(this, sector);
    const { bytes, eraseCut } = this.#power.eraseAllowance(this.sectorSize);
    const start = sector * this.sectorSize;
    this.#bytes.fill(FLASH_ERASED_BYTE, start, start + bytes);
    this.stats.erases++;
    if (eraseCut) this.#power.cut(`after erasing ${bytes} of ${this.sectorSize} bytes of sector ${sector}`);
  }
}
