/**
 * The small ports over Node: crypto, timers, clock, randomness, log. Each is a frozen value or a
 * factory of one; none keeps state beyond what it says.
 */
import { createHash, createHmac, randomFillSync } from "node:crypto";
import type { CryptoPort } from "../../modules/crypto.js";
import type { Clock, LogLevel, LogPort, RandomSource, SecureRandom, TimerPort } from "../../modules/ports.js";

/**
 * HMAC-SHA256 and SHA-256 from node:crypto. Results are plain Uint8Arrays (copies), not Buffers,
 * so that `slice` copies as it does on XS. node:crypto copies the key; no reference is kept.
 */
export const nodeCrypto: CryptoPort = Object.freeze({
  hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
    return new Uint8Array(createHmac("sha256", key).update(message).digest());
  },
  sha256(data: Uint8Array): Uint8Array {
    return new Uint8Array(createHash("sha256").update(data).digest());
  },
});

/** setTimeout's largest delay; a longer one would fire after 1 ms, so it is reached in steps. */
const maxTimerDelayMs = 0x7fffffff;

/** A timer longer than setTimeout allows: re-armed until its whole delay has passed. */
class LongTimer {
  #handle: NodeJS.Timeout | undefined;
  #due: number;
  #callback: () => void;
  #unref: boolean;

  constructor(callback: () => void, delayMs: number, unref: boolean) {
    this.#callback = callback;
    this.#due = Date.now() + delayMs;
    this.#unref = unref;
    this.#arm();
  }

  #arm(): void {
    const left = this.#due - Date.now();
    if (left <= 0) {
      this.#handle = undefined;
      this.#callback();
      return;
    }
    this.#handle = setTimeout(() => this.#arm(), Math.min(left, maxTimerDelayMs));
    if (this.#unref) this.#handle.unref();
  }

  clear(): void {
    if (this.#handle !== undefined) clearTimeout(this.#handle);
    this.#handle = undefined;
  }
}

export interface NodeTimerOptions {
  /** Timers do not keep the process alive (for a fleet whose sockets already do). Default false. */
  readonly unref?: boolean;
}

/** One-shot timers over setTimeout. Delays below 0 or not a number count as 0. */
export function createNodeTimers(options: NodeTimerOptions = {}): TimerPort {
  const unref = options.unref ?? false;
  return Object.freeze({
    set(callback: () => void, delayMs: number): unknown {
      const delay = Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0;
      if (delay > maxTimerDelayMs) return new LongTimer(callback, delay, unref);
      const handle = setTimeout(callback, delay);
      if (unref) handle.unref();
      return handle;
    },
    clear(handle: unknown): void {
      if (handle instanceof LongTimer) handle.clear();
      else if (handle !== undefined && handle !== null) clearTimeout(handle as NodeJS.Timeout);
    },
  });
}

/** Timers that keep the process alive while armed. */
export const nodeTimers: TimerPort = createNodeTimers();

/** The system's wall clock. */
export const systemClock: Clock = () => Date.now();

/** Math.random: fine for jitter, not for secrets. */
export const mathRandom: RandomSource = () => Math.random();

/** Cryptographically strong bytes from the operating system. */
export const secureRandom: SecureRandom = (bytes: Uint8Array) => {
  randomFillSync(bytes);
};

export { seededRandom } from "./seeded-random.js";

const levelRank: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Field names whose values are never printed, whatever the caller passes. */
const secretField = /pass(word)?|token|secret|signature|^sig$|key$|authorization|credential/i;
/** A value that looks like a SAS token or a connection string's key is never printed either. */
const secretValue = /SharedAccessSignature|SharedAccessKey=|sig=/i;

export interface ConsoleLogOptions {
  /** The lowest level written. Default "info". */
  readonly level?: LogLevel;
  /** Where each line goes. Default: stdout for debug and info, stderr for warn and error. */
  readonly write?: (line: string, level: LogLevel) => void;
  /** The clock for the timestamp. Default: the system clock. */
  readonly clock?: Clock;
}

/**
 * A LogPort that writes one line per event, in logfmt:
 *
 *     2025-01-01T12:00:00.000Z info  [device-0001] registration assigned hub=hub-1.azure-devices.localhost status=200
 *
 * Values are printed bare when they are safe to (no spaces, quotes, `=` or control characters),
 * quoted as JSON otherwise, so that a line can be read back without ambiguity. Fields whose names
 * say they are secret (password, token, key, signature...) and values that look like SAS tokens
 * are replaced by `[redacted]`: the LogPort contract says callers never pass secrets, and this is
 * the second line of defence.
 */
export function consoleLog(prefix?: string, options: ConsoleLogOptions = {}): LogPort {
  const threshold = levelRank[options.level ?? "info"];
  const clock = options.clock ?? systemClock;
  const write =
    options.write ??
    ((line: string, level: LogLevel) => {
      (level === "warn" || level === "error" ? process.stderr : process.stdout).write(line + "\n");
    });
  const head = prefix === undefined || prefix === "" ? "" : ` [${sanitize(prefix)}]`;
  return (level, message, fields) => {
    if ((levelRank[level] ?? levelRank.error) < threshold) return;
    let line = `${new Date(clock()).toISOString()} ${level.padEnd(5)}${head} ${sanitize(message)}`;
    if (fields !== undefined) {
      for (const name of Object.keys(fields)) {
        line += ` ${sanitize(name).replace(/[\s=]/g, "_")}=${formatValue(name, fields[name])}`;
      }
    }
    write(line, level);
  };
}

/** Control characters (newlines above all) would split one event over several lines. */
function sanitize(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => (c === "\n" ? "\\n" : c === "\t" ? "\\t" : "?"));
}

function formatValue(name: string, value: unknown): string {
  if (secretField.test(name)) return "[redacted]";
  let text: string;
  if (value === undefined) return "undefined";
  if (value === null || typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (typeof value === "string") text = value;
  else if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  else if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    text = `${value.name}${typeof code === "string" ? ` ${code}` : ""}: ${value.message}`;
  } else {
    try {
      text = JSON.stringify(value, (key, v: unknown) => (key !== "" && secretField.test(key) ? "[redacted]" : v)) ?? String(value);
    } catch {
      text = "[unserialisable]"; // a cycle or a BigInt inside: say so rather than drop the line
    }
  }
  if (secretValue.test(text)) return "[redacted]";
  if (text.length > 300) text = text.slice(0, 299) + "…";
  return /^[^\s"=\u0000-\u001f\u007f]+$/.test(text) ? text : JSON.stringify(text);
}
