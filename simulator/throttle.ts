// The service's rate limits, per unit: registrations per minute, operations per minute (polls and
// lookups), and polls per device in any 10 s. Each check answers 0 (go ahead, and counted) or the
// seconds to put in `retry-after`. Time comes in as an argument.

/** A fixed one-minute window, as a per-minute quota is usually enforced. */
export class WindowLimit {
  #limit: number;
  readonly #windowMs: number;
  #windowStart = 0;
  #count = 0;

  constructor(limit: number, windowMs = 60_000) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  set limit(value: number) {
    this.#limit = value;
  }

  /** 0 when admitted (and counted), else the whole seconds until the window resets (at least 1). */
  take(nowMs: number): number {
    if (nowMs >= this.#windowStart + this.#windowMs || nowMs < this.#windowStart) {
      this.#windowStart = nowMs - (nowMs % this.#windowMs);
      this.#count = 0;
    }
    if (this.#count >= this.#limit) return Math.max(1, Math.ceil((this.#windowStart + this.#windowMs - nowMs) / 1000));
    this.#count++;
    return 0;
  }
}

/** At most `limit` events per key in any sliding `windowMs`; keeps the last `limit` times per key. */
export class SlidingKeyLimit {
  #limit: number;
  readonly #windowMs: number;
  readonly #times = new Map<string, number[]>();

  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  set limit(value: number) {
    this.#limit = value;
  }

  take(key: string, nowMs: number): number {
    let times = this.#times.get(key);
    if (times === undefined) {
      times = [];
      this.#times.set(key, times);
    }
    while (times.length > 0 && times[0] <= nowMs - this.#windowMs) times.shift();
    if (times.length >= this.#limit) return Math.max(1, Math.ceil((times[0] + this.#windowMs - nowMs) / 1000));
    times.push(nowMs);
    return 0;
  }

  /** Forgets keys with no event in the window (called from the emulator's sweep). */
  prune(nowMs: number): void {
    for (const [key, times] of this.#times) {
      if (times.length === 0 || times[times.length - 1] <= nowMs - this.#windowMs) this.#times.delete(key);
    }
  }
}
