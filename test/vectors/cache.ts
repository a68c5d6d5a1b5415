/**
 * Fixtures shared by the credential-cache tests on Node (test/credential-cache.test.ts) and on XS
 * (test/xs/cache.xs.ts): the same keys, assignments and nonces, so the two can compare bytes.
 */
import type { CachedAssignment } from "../../modules/credential-cache.js";

export const KEY = "Y2FjaGUtdGVzdC1kZXZpY2Uta2V5LTAxMjM0NTY3ODk=";
export const OTHER_KEY = "b3RoZXItZGV2aWNlLWtleS1hYmNkZWZnaGlqa2xtbm8=";
export const REG = "sensor-0042";
export const SECTOR = 512;

/** A deterministic SecureRandom: the same nonces on every engine and every run. */
export function countingRandom(seed = 1): (bytes: Uint8Array) => void {
  let n = seed;
  return (bytes) => {
    for (let i = 0; i < bytes.length; i++) {
      n = (n * 1103515245 + 12345) >>> 0;
      bytes[i] = n >>> 24;
    }
  };
}

export function assignment(hub: string, writtenAt: number): CachedAssignment {
  return { assignedHub: hub, deviceId: REG, registrationId: REG, substatus: "initialAssignment", idScope: "0ne00ABCDEF", writtenAt };
}

export const A = assignment("hub-a.azure-devices.net", 1767225600000);
export const B = assignment("hub-b.azure-devices.net", 1767225700000);
export const C = assignment("hub-c.azure-devices.net", 1767225800000);
