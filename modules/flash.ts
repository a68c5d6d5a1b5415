/**
 * The storage port for records that must survive a power cut, with the semantics of NOR flash
 * (the ESP32's SPI flash, which Moddable exposes synchronously as `embedded:storage/flash`):
 *
 * - the region is divided into sectors of `sectorSize` bytes (4096 on the ESP32);
 * - `erase(sector)` sets every byte of one sector to 0xFF;
 * - `write(offset, bytes)` programs bytes, and programming can only clear bits: the chip stores
 *   `old & new`. To turn a 0 bit back into a 1 the whole sector must be erased;
 * - a power cut during a write leaves a prefix of it programmed; a power cut during an erase
 *   leaves the sector in between (modelled here as a prefix erased).
 *
 * Everything is synchronous: on the ESP32 a flash write or erase blocks the caller (the SDK's
 * flash module does too), so a cache update is a plain sequence of calls.
 *
 * `MemoryFlash` is the in-memory implementation for tests on Node and on XS; the desktop host
 * has a file-backed one (hosts/desktop/nor-flash-file.ts). Both share `PowerCutSwitch`, the
 * hook that cuts the power at a chosen byte of a write or during a chosen erase.
 */
import { check, PeerError, UsageError } from "./errors.js";

/** What an erased byte reads as. */
export const FLASH_ERASED_BYTE = 0xff;

/**
 * A flash region with NOR semantics. Offsets are relative to the start of the region.
 *
 * A caller that keeps to "erase, then write each byte at most once" gets the same result on every
 * implementation, strict or not.
 */
export interface FlashPort {
  /** Bytes per erasable sector (a power of two on real chips; any positive integer here). */
  readonly sectorSize: number;
  /** Number of sectors in the region. */
  readonly sectorCount: number;
  /**
   * Reads `length` bytes at `offset`; returns a new array the caller owns.
   * @throws UsageError INVALID_ARGUMENT when the range is outside the region.
   * @throws PeerError POWER_CUT (simulators) or STORAGE (I/O failure of a host).
   */
  read(offset: number, length: number): Uint8Array;
  /**
   * Programs `bytes` at `offset`: each byte becomes `old & new`.
   * @throws UsageError INVALID_ARGUMENT when the range is outside the region;
   *   FLASH_WRITE_SETS_BITS from a strict implementation when a byte would need a 0 bit set to 1
   *   (nothing is written then).
   * @throws PeerError POWER_CUT (simulators) or STORAGE (I/O failure of a host).
   */
  write(offset: number, bytes: Uint8Array): void;
  /**
   * Sets every byte of sector `sector` (0-based) to 0xFF.
   * @throws UsageError INVALID_ARGUMENT when there is no such sector.
   * @throws PeerError POWER_CUT (simulators) or STORAGE (I/O failure of a host).
   */
  erase(sector: number): void;
}

/** Checks a byte range against a flash region. @throws UsageError INVALID_ARGUMENT */
export function checkFlashRange(flash: FlashPort, offset: number, length: number): void {
  const size = flash.sectorSize * flash.sectorCount;
  check(Number.isInteger(offset) && offset >= 0, `flash offset must be a non-negative integer, got ${offset}`);
  check(Number.isInteger(length) && length >= 0, `flash length must be a non-negative integer, got ${length}`);
  check(offset + length <= size, `flash range ${offset}+${length} runs past the end of the region (${size} bytes)`);
}

/** Checks a sector index. @throws UsageError INVALID_ARGUMENT */
export function checkFlashSector(flash: FlashPort, sector: number): void {
  check(
    Number.isInteger(sector) && sector >= 0 && sector < flash.sectorCount,
    `flash sector must be an integer in 0..${flash.sectorCount - 1}, got ${sector}`,
  );
}

/** Checks a geometry. @throws UsageError INVALID_ARGUMENT */
export function checkFlashGeometry(sectorSize: number, sectorCount: number): void {
  check(Number.isInteger(sectorSize) && sectorSize > 0, `sectorSize must be a positive integer, got ${sectorSize}`);
  check(Number.isInteger(sectorCount) && sectorCount > 0, `sectorCount must be a positive integer, got ${sectorCount}`);
}

/**
 * Returns the index of the first byte of `bytes` that would need a bit set if programmed over
 * `old` (starting at `oldOffset`), or -1 when the write only clears bits.
 */
export function firstBitSettingByte(old: Uint8Array, oldOffset: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) {
    if ((old[oldOffset + i] & bytes[i]) !== bytes[i]) return i;
  }
  return -1;
}

/** Counters that tests use to size a scenario (how many bytes a save writes, how many erases). */
export interface FlashStats {
  /** write() calls that reached the chip (a cut one included). */
  writes: number;
  /** Bytes programmed. */
  bytesWritten: number;
  /** erase() calls, complete or cut. */
  erases: number;
}

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
