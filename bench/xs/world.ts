/**
 * One device in the virtual world of test/support/virtual-world.ts, for the XS cost entries: boots
 * a DeviceRuntime against the scripted cloud on a virtual clock, with a crypto port that counts
 * the HMACs it is asked for (portable SHA-256: the XS tier has no native digest).
 */
import type { CryptoPort } from "../../modules/crypto.js";
import { portableCrypto } from "../../modules/sha256.js";
import type { MemoryFlash } from "../../modules/memory-flash.js";
import { DeviceRuntime } from "../../modules/runtime.js";
import { ScriptedCloud, VirtualClock, virtualConfig } from "../../test/support/virtual-world.js";

export const counts = { hmac: 0, sha256: 0 };

export const countingCrypto: CryptoPort = Object.freeze({
  hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
    counts.hmac++;
    return portableCrypto.hmacSha256(key, message);
  },
  sha256(data: Uint8Array): Uint8Array {
    counts.sha256++;
    return portableCrypto.sha256(data);
  },
});

export interface Boot {
  runtime: DeviceRuntime;
  readonly clock: VirtualClock;
  readonly cloud: ScriptedCloud;
  connected: boolean;
  acknowledged: number;
}

/**
 * Starts a device on `flash` and runs the world until it is connected and its one message is
 * acknowledged. `stop`: stop the device then (a boot that ends), or leave it connected.
 */
export function boot(flash: MemoryFlash, stop: boolean): Boot {
  const clock = new VirtualClock();
  const cloud = new ScriptedCloud(clock);
  const state: Boot = { runtime: undefined as unknown as DeviceRuntime, clock, cloud, connected: false, acknowledged: 0 };
  const runtime = new DeviceRuntime(
    virtualConfig,
    { mqtt: cloud, timers: clock, clock: () => clock.now, random: () => 0.5, secureRandom: (bytes) => bytes.fill(7), flash, crypto: countingCrypto },
    (e) => {
      if (e.source === "runtime" && e.state === "connected" && !state.connected) {
        state.connected = true;
        runtime.send({ n: 1 });
      }
      if (e.source === "telemetry") {
        state.acknowledged++;
        if (stop) runtime.stop();
      }
    },
  );
  state.runtime = runtime;
  runtime.start();
  // Runs due work; a connected device that is not stopped still has its keepalive and token
  // renewal timers far ahead, which `until` leaves alone.
  clock.run(10_000, clock.now + 60_000);
  return state;
}
