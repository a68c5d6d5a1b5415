/**
 * What differs between the ESP32 and the desktop simulators, behind one module. The manifest maps
 * `./target.js` to target-esp32.ts on esp32 and to target-sim.ts on mac, lin and win.
 */
import type { FlashPort } from "../../modules/flash.js";
import type { HostSettings } from "./settings.js";

export interface Target {
  /** True on the desktop simulators: the host's clock is right, there is no NTP by default. */
  readonly simulator: boolean;
  /**
   * Opens the flash region of the credential cache: the partition `cachePartition` on the ESP32
   * (in the partition table), the file `cacheFile` under the file root on the simulators.
   * @throws PeerError STORAGE (or the SDK's error) when it cannot be opened.
   */
  openCacheFlash(where: Pick<HostSettings, "cachePartition" | "cacheFile">): FlashPort;
  /**
   * Reads a text file (the emulator's CA), where the platform has files.
   * @throws UsageError INVALID_ARGUMENT where it has none; PeerError STORAGE when reading fails.
   */
  readText(path: string): string;
}

export declare const target: Target;
