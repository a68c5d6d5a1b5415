/**
 * XS memory entry, baseline: the same modules and the same world as memory-connected.ts, the flash
 * created, no device. bench/xs-cost.ts writes a snapshot of each at exit and compares them.
 */
import { newFlash } from "../../test/support/virtual-world.js";
import { boot } from "./world.js";

declare const print: (...values: unknown[]) => void;

(globalThis as { kept?: unknown }).kept = { flash: newFlash(), boot };
print("XS-MEMORY-BASELINE");
