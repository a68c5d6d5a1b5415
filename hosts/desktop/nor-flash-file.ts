/**
 * The desktop host's flash: a file that behaves like NOR flash, so that the simulator keeps a
 * device's credential cache across runs exactly as the ESP32 keeps it across reboots.
 *
 * - A new file is created at `sectorSize * sectorCount` bytes, all 0xFF (erased).
 * - `write` programs like a NOR chip: each byte becomes `old & new` (it never sets a bit, and it
 *   does not complain: pass `strict: true` to get MemoryFlash's UsageError instead).
 * - `erase(sector)` sets one sector to 0xFF.
 * - Power-cut hook for tests: `cutPowerAfterBytes(n)` / `cutPowerDuringErase(nth, bytes)`. At
 *   the cut the partial write or erase is put in the file, then the instance is "dead": every
 *   later call throws PeerError POWER_CUT. Reopen the file (a new NorFlashFile) to "reboot".
 *
 * Durability: with `sync: "always"` (the default) every write and erase is followed by fsync, so
 * that when a call returns its bytes are on disk, as they are in flash when the ESP32's call
 * returns; a crash of the host machine then loses nothing that a device would have kept.
 * `sync: "never"` leaves it to the OS (enough for a process that is killed, as the page cache
 * survives it; faster for fleets of simulated devices).
 *
 * Everything is synchronous (node:fs *Sync), like the flash API on the device.
 */
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from "node:fs";
import { check, PeerError, UsageError } from "../../modules/errors.js";
import {
  checkFlashGeometry,
  checkFlashRange,
  checkFlashSector,
  FLASH_ERASED_BYTE,
  firstBitSettingByte,
  type FlashPort,
  type FlashStats,
} from "../../modules/flash.js";
import { PowerCutSwitch } from "../../modules/memory-flash.js";

export interface NorFlashFileOptions {
  /** The backing file. Created (erased) when missing; an existing file must have the right size. */
  readonly path: string;
  /** Bytes per sector; 4096 like the ESP32 when omitted. */
  readonly sectorSize?: number;
  /** Number of sectors; 2 when omitted. */
  readonly sectorCount?: number;
  /** true: a write that would set a bit throws UsageError FLASH_WRITE_SETS_BITS. Default false (AND). */
  readonly strict?: boolean;
  /** fsync after each write and erase ("always", the default) or never. */
  readonly sync?: "always" | "never";
}

export class NorFlashFile implements FlashPort {
  readonly path: string;
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly strict: boolean;
  readonly stats: FlashStats = { writes: 0, bytesWritten: 0, erases: 0 };
  #fd: number | undefined;
  #sync: boolean;
  #power = new PowerCutSwitch();

  /**
   * Opens (or creates) the file.
   * @throws UsageError INVALID_ARGUMENT on a bad geometry or an existing file of another size;
   *   PeerError STORAGE when the file cannot be opened or created.
   */
  constructor(options: NorFlashFileOptions) {
    check(typeof options === "object" && options !== null && typeof options.path === "string", "NorFlashFile needs { path }");
    this.path = options.path;
    this.sectorSize = options.sectorSize ?? 4096;
    this.sectorCount = options.sectorCount ?? 2;
    checkFlashGeometry(this.sectorSize, this.sectorCount);
    this.strict = options.strict ?? false;
    check(options.sync === undefined || options.sync === "always" || options.sync === "never", `sync must be "always" or "never"`);
    this.#sync = (options.sync ?? "always") === "always";
    const size = this.sectorSize * this.sectorCount;
    const fresh = !existsSync(this.path);
    const fd = io(`open ${this.path}`, () => openSync(this.path, fresh ? "w+" : "r+"));
    try {
      if (fresh) {
        io("initialise the flash file", () => {
          const erased = new Uint8Array(this.sectorSize).fill(FLASH_ERASED_BYTE);
          for (let s = 0; s < this.sectorCount; s++) writeSync(fd, erased, 0, erased.length, s * this.sectorSize);
          fsyncSync(fd);
        });
      } else {
        const actual = io("stat the flash file", () => fstatSync(fd).size);
        check(actual === size, `flash file ${this.path} is ${actual} bytes; this geometry needs ${size}`);
      }
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    this.#fd = fd;
  }

  /** True once a simulated power cut happened; reopen the file to continue. */
  get dead(): boolean {
    return this.#power.dead;
  }

  /** The next `bytes` programmed bytes succeed, then the power goes (see PowerCutSwitch). */
  cutPowerAfterBytes(bytes: number): void {
    this.#power.cutAfterBytes(bytes);
  }

  /** The nth erase from now is cut after `erasedBytes` bytes (default half a sector). */
  cutPowerDuringErase(nth = 0, erasedBytes = this.sectorSize >> 1): void {
    this.#power.cutDuringErase(nth, erasedBytes);
  }

  read(offset: number, length: number): Uint8Array {
    checkFlashRange(this, offset, length);
    const fd = this.#open();
    this.#power.assertPowered();
    const out = new Uint8Array(length);
    readFully(fd, out, offset);
    return out;
  }

  write(offset: number, bytes: Uint8Array): void {
    checkFlashRange(this, offset, bytes.length);
    const fd = this.#open();
    this.#power.assertPowered();
    const current = new Uint8Array(bytes.length);
    readFully(fd, current, offset);
    if (this.strict) {
      const bad = firstBitSettingByte(current, 0, bytes);
      if (bad >= 0) {
        throw new UsageError(
          "FLASH_WRITE_SETS_BITS",
          `flash write at offset ${offset + bad} would set bits that only an erase can set: erase the sector first`,
        );
      }
    }
    const allowed = this.#power.writeAllowance(bytes.length);
    for (let i = 0; i < allowed; i++) current[i] &= bytes[i];
    if (allowed > 0) {
      io("write the flash file", () => {
        writeFully(fd, current.subarray(0, allowed), offset);
        if (this.#sync) fsyncSync(fd);
      });
    }
    this.stats.writes++;
    this.stats.bytesWritten += allowed;
    if (allowed < bytes.length) this.#power.cut(`after ${allowed} of ${bytes.length} bytes of a write at offset ${offset}`);
  }

  erase(sector: number): void {
    checkFlashSector(this, sector);
    const fd = this.#open();
    const { bytes, eraseCut } = this.#power.eraseAllowance(this.sectorSize);
    if (bytes > 0) {
      io("erase in the flash file", () => {
        writeFully(fd, new Uint8Array(bytes).fill(FLASH_ERASED_BYTE), sector * this.sectorSize);
        if (this.#sync) fsyncSync(fd);
      });
    }
    this.stats.erases++;
    if (eraseCut) this.#power.cut(`after erasing ${bytes} of ${this.sectorSize} bytes of sector ${sector}`);
  }

  /** Closes the file. Idempotent; later calls throw UsageError STOPPED. */
  close(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    closeSync(fd);
  }

  #open(): number {
    if (this.#fd === undefined) throw new UsageError("STOPPED", `flash file ${this.path} is closed`);
    return this.#fd;
  }
}

function readFully(fd: number, into: Uint8Array, position: number): void {
  io("read the flash file", () => {
    let done = 0;
    while (done < into.length) {
      const n = readSync(fd, into, done, into.length - done, position + done);
      if (n === 0) throw new Error("unexpected end of file");
      done += n;
    }
  });
}

function writeFully(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}

/** Runs a file operation; an OS error becomes PeerError STORAGE with its code (no data in it). */
function io<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof PeerError || error instanceof UsageError) throw error;
    const code = (error as { code?: string }).code;
    const message = error instanceof Error ? error.message : String(error);
    throw new PeerError("STORAGE", `could not ${what}: ${code ?? message}`);
  }
}
