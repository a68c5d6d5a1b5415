/**
 * FlashPorts for the credential cache on the device:
 *
 * - `PartitionFlash` over `embedded:storage/flash` (ESP32): a data partition of at least two
 *   4 KiB sectors (hosts/moddable/esp32/partitions.csv adds `dpscache`). The chip has NOR
 *   semantics itself, so the port only translates calls and errors.
 * - `FileFlash` over the `file` module (the desktop simulators, which have no flash module): a
 *   file of sectorSize × sectorCount bytes in which the port enforces NOR semantics (a write ANDs,
 *   an erase sets 0xFF) and writes in place, so a crash during a write leaves a prefix of it,
 *   like the chip. The SDK's `preference` module was not used: on lin it rewrites one JSON file
 *   for every change (deleting it first) and ignores errors, which is the opposite of what the
 *   cache's power-cut argument needs.
 */
import { PeerError } from "../../modules/errors.js";
import { checkFlashGeometry, checkFlashRange, checkFlashSector, FLASH_ERASED_BYTE, type FlashPort } from "../../modules/flash.js";
import type { FileClass, FlashPartition } from "./sdk.js";

function storageError(what: string, error: unknown): PeerError {
  return new PeerError("STORAGE", `${what} failed: ${error instanceof Error ? error.message : String(error)}`);
}

/** A copy as an ArrayBuffer of exactly the bytes (the SDK's writers take the whole buffer). */
function exactBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer as ArrayBuffer;
}

/** The cache's flash on the ESP32: an open `embedded:storage/flash` partition. */
export class PartitionFlash implements FlashPort {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly #partition: FlashPartition;

  /** @throws PeerError STORAGE when the partition cannot report its geometry. */
  constructor(partition: FlashPartition) {
    let status: ReturnType<FlashPartition["status"]>;
    try {
      status = partition.status();
    } catch (error) {
      throw storageError("reading the flash partition's status", error);
    }
    this.#partition = partition;
    this.sectorSize = status.blockLength;
    this.sectorCount = status.blocks;
  }

  read(offset: number, length: number): Uint8Array {
    checkFlashRange(this, offset, length);
    try {
      return new Uint8Array(this.#partition.read(length, offset));
    } catch (error) {
      throw storageError(`flash read at ${offset}`, error);
    }
  }

  write(offset: number, bytes: Uint8Array): void {
    checkFlashRange(this, offset, bytes.length);
    try {
      this.#partition.write(exactBuffer(bytes), offset);
    } catch (error) {
      throw storageError(`flash write at ${offset}`, error);
    }
  }

  erase(sector: number): void {
    checkFlashSector(this, sector);
    try {
      this.#partition.eraseBlock(sector);
    } catch (error) {
      throw storageError(`flash erase of sector ${sector}`, error);
    }
  }
}

export interface FileFlashOptions {
  readonly File: FileClass;
  /** Where the image lives, e.g. `config.file.root + "dps-cache.flash"`. */
  readonly path: string;
  /** Default 4096, like the ESP32. */
  readonly sectorSize?: number;
  /** Default 2: the cache's two slots. */
  readonly sectorCount?: number;
}

/**
 * NOR flash emulated in a file, for the Moddable simulators. Each call opens, does its work in
 * place and closes the file, so that what a call wrote is on disk when it returns.
 */
export class FileFlash implements FlashPort {
  readonly sectorSize: number;
  readonly sectorCount: number;
  readonly #File: FileClass;
  readonly #path: string;

  /**
   * Creates the file erased (all 0xFF) when it is missing or has another size.
   * @throws UsageError INVALID_ARGUMENT on a bad geometry; PeerError STORAGE when the file fails.
   */
  constructor(options: FileFlashOptions) {
    this.sectorSize = options.sectorSize ?? 4096;
    this.sectorCount = options.sectorCount ?? 2;
    checkFlashGeometry(this.sectorSize, this.sectorCount);
    this.#File = options.File;
    this.#path = options.path;
    const size = this.sectorSize * this.sectorCount;
    this.#use("opening the flash file", (file) => {
      if (file.length !== size) {
        file.position = 0;
        file.write(new Uint8Array(size).fill(FLASH_ERASED_BYTE).buffer);
      }
    });
  }

  read(offset: number, length: number): Uint8Array {
    checkFlashRange(this, offset, length);
    if (length === 0) return new Uint8Array(0);
    return this.#use(`flash file read at ${offset}`, (file) => {
      file.position = offset;
      return new Uint8Array(file.read(ArrayBuffer, length));
    });
  }

  write(offset: number, bytes: Uint8Array): void {
    checkFlashRange(this, offset, bytes.length);
    if (bytes.length === 0) return;
    this.#use(`flash file write at ${offset}`, (file) => {
      file.position = offset;
      const merged = new Uint8Array(file.read(ArrayBuffer, bytes.length));
      for (let i = 0; i < merged.length; i++) merged[i] &= bytes[i];
      file.position = offset;
      file.write(merged.buffer as ArrayBuffer);
    });
  }

  erase(sector: number): void {
    checkFlashSector(this, sector);
    this.#use(`flash file erase of sector ${sector}`, (file) => {
      file.position = sector * this.sectorSize;
      file.write(new Uint8Array(this.sectorSize).fill(FLASH_ERASED_BYTE).buffer);
    });
  }

  #use<T>(what: string, work: (file: InstanceType<FileClass>) => T): T {
    let file: InstanceType<FileClass> | undefined;
    try {
      file = new this.#File(this.#path, true);
      return work(file);
    } catch (error) {
      throw storageError(what, error);
    } finally {
      file?.close();
    }
  }
}
