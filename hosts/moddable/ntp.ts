/**
 * The clock before the first SAS token: a DPS or hub token carries an expiry computed from the
 * device clock, and an ESP32 boots at 1970. `setClockFromNtp` asks the SDK's
 * `embedded:network/ntp/client` once and sets the clock through `setTime` (the SDK's `Time.set`,
 * in seconds) before the caller starts the runtime. The simulators' clock is the host's: they
 * skip this (see main.ts).
 */
import type { NtpClient } from "./sdk.js";

/** Before this instant (2024-01-01) the clock cannot be right. */
export const EARLIEST_PLAUSIBLE_TIME_MS = 1_704_067_200_000;

/**
 * Calls `done()` once the clock is set, or `done(reason)` when NTP gave no plausible answer.
 * The client is closed either way.
 */
export function setClockFromNtp(client: NtpClient, setTime: (seconds: number) => void, done: (error?: string) => void): void {
  client.getTime((error, time) => {
    client.close();
    if (error || typeof time !== "number" || !(time >= EARLIEST_PLAUSIBLE_TIME_MS)) {
      done(`NTP gave no usable time${error instanceof Error && error.message ? `: ${error.message}` : ""}`);
      return;
    }
    setTime(Math.floor(time / 1000));
    done();
  });
}
