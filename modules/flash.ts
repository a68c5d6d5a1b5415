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
 * `MemoryFlash` (memory-flash.ts) is the in-memory implementation for tests on Node and on XS;
 * the desktop host has a file-backed one (hosts/desktop/nor-flash-file.ts). Both share
 * `PowerCutSwitch`, the hook that cuts the power at a chosen byte of a write or during a chosen
 * erase.
 */
import { check } from "./errors.js";

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
