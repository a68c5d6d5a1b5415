/** The desktop simulators' side of ./target.js: the cache in a file under the file root. */
import { File } from "file";
import config from "mc/config";
import { PeerError } from "../../modules/errors.js";
import { FileFlash } from "./flash.js";
import type { Target } from "./target.js";

export const target: Target = Object.freeze<Target>({
  simulator: true,
  openCacheFlash: (where) => new FileFlash({ File, path: (config.file?.root ?? "/tmp/") + where.cacheFile }),
  readText: (path: string): string => {
    let file: File | undefined;
    try {
      file = new File(path);
      return file.read(String);
    } catch (error) {
      throw new PeerError("STORAGE", `cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      file?.close();
    }
  },
});
