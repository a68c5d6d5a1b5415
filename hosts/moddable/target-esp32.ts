/** The ESP32 side of ./target.js: the cache on a flash partition, no files. */
import flash from "embedded:storage/flash";
import { UsageError } from "../../modules/errors.js";
import { PartitionFlash } from "./flash.js";
import type { Target } from "./target.js";

export const target: Target = Object.freeze<Target>({
  simulator: false,
  openCacheFlash: (where) => new PartitionFlash(flash.open({ path: where.cachePartition, mode: "r+" })),
  readText: (path: string): string => {
    throw new UsageError("INVALID_ARGUMENT", `the ESP32 build has no files to read ${path} from: use ca=custom with a custom-ca.der resource`);
  },
});
