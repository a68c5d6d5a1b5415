/**
 * XS memory entry: one device cold-started and left connected to its hub (its runtime, hub
 * session, cache, buffers and the world's share), kept alive until the snapshot at exit.
 */
import { newFlash } from "../../test/support/virtual-world.js";
import { boot } from "./world.js";

declare const print: (...values: unknown[]) => void;

const flash = newFlash();
const device = boot(flash, false);
(globalThis as { kept?: unknown }).kept = { flash, device };
print(device.connected ? "XS-MEMORY-CONNECTED" : "XS-MEMORY-NOT-CONNECTED");
