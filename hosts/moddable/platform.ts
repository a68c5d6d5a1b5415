/**
 * The small ports over the SDK: HMAC-SHA256 over the `crypt` Digest, timers over `timer`, the
 * log over `trace`, the clock and the random sources. Each takes the SDK piece it wraps as an
 * argument (main.ts passes the real ones, the XS test tier stand-ins).
 */
import type { CryptoPort } from "../../modules/crypto.js";
import type { LogLevel, LogPort, SecureRandom, TimerPort } from "../../modules/ports.js";
import type { DigestClass, TimerModule } from "./sdk.js";

/** SHA-256's block size: HMAC pads the key to it (RFC 2104). */
const BLOCK = 64;

/** The bytes as an ArrayBuffer of their own (no copy when they already span their buffer). */
function whole(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? (bytes.buffer as ArrayBuffer) : (bytes.slice().buffer as ArrayBuffer);
}

/**
 * HMAC-SHA256 (RFC 2104) and SHA-256 over the SDK's native `Digest`. One Digest is kept and
 * reset per use: no allocation beyond the pads and the results. The key is not kept.
 */
export function digestCrypto(Digest: DigestClass): CryptoPort {
  const digest = new Digest("SHA256");
  const sha256 = (data: Uint8Array): Uint8Array => {
    digest.reset();
    digest.write(whole(data));
    return new Uint8Array(digest.close());
  };
  return Object.freeze({
    sha256,
    hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
      const k = key.length > BLOCK ? sha256(key) : key;
      const pad = new Uint8Array(BLOCK);
      pad.set(k);
      for (let i = 0; i < BLOCK; i++) pad[i] ^= 0x36;
      digest.reset();
      digest.write(pad.buffer);
      digest.write(whole(message));
      const inner = new Uint8Array(digest.close());
      for (let i = 0; i < BLOCK; i++) pad[i] ^= 0x36 ^ 0x5c;
      digest.reset();
      digest.write(pad.buffer);
      digest.write(inner.buffer);
      const mac = new Uint8Array(digest.close());
      pad.fill(0);
      return mac;
    },
  });
}

/** One-shot timers over the SDK's `timer` module. */
export function moddableTimers(Timer: TimerModule): TimerPort {
  return Object.freeze({
    set: (callback: () => void, delayMs: number) => Timer.set(callback, delayMs > 0 ? delayMs : 0),
    clear: (handle: unknown) => {
      if (handle !== undefined) Timer.clear(handle);
    },
  });
}

/** Strong random bytes from the SDK's `rng` module (`RNG.get(n)`, the TLS stack's own source). */
export function rngSecureRandom(RNG: { get(count: number): ArrayBuffer }): SecureRandom {
  return (bytes) => bytes.set(new Uint8Array(RNG.get(bytes.length)));
}

const rank: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * A LogPort that writes one line per event through `trace` (the SDK's console: xsbug, the
 * serial port, or the simulator's stdout). Fields are left out: the event's one-line description
 * says what happened, and leaving them out keeps secrets and RAM out of the log.
 */
export function traceLog(trace: (text: string) => void, level: LogLevel = "info"): LogPort {
  const threshold = rank[level];
  return (at, message) => {
    if (rank[at] >= threshold) trace(`${at}: ${message}\n`);
  };
}
