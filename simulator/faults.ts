// Fault rules: which step of which device misbehaves, and how. Rules are checked in the order
// they were added; the first that matches a step wins. A rule with `times` is spent after that
// many matches; a rule with `probability` draws from the emulator's seeded generator only when
// everything else about it matches, so a seed replays the same choices for the same requests.
import { checkFaultRule, type FaultRule, type FaultStep } from "./config.js";
import type { Random } from "./random.js";

export interface StoredFault {
  readonly id: number;
  readonly rule: FaultRule;
  /** Matches left before the rule is spent (undefined: unlimited). */
  remaining: number | undefined;
  matched: number;
}

export interface FaultSubject {
  registrationId?: string;
  /** The enrollment group the device belongs to, when known. */
  groupId?: string;
}

export class FaultBook {
  readonly #random: Random;
  #nextId = 1;
  #rules: StoredFault[] = [];
  /** Steps with at least one live rule: the common case (no rule for a step) costs one lookup. */
  #steps = new Set<FaultStep>();

  constructor(random: Random) {
    this.#random = random;
  }

  /** Adds a rule (checked; throws EmulatorError when invalid) and returns its id. */
  add(rule: FaultRule): number {
    checkFaultRule(rule);
    const stored: StoredFault = { id: this.#nextId++, rule: { ...rule }, remaining: rule.times, matched: 0 };
    this.#rules.push(stored);
    this.#steps.add(rule.step);
    return stored.id;
  }

  remove(id: number): boolean {
    const before = this.#rules.length;
    this.#rules = this.#rules.filter((r) => r.id !== id);
    this.#reindex();
    return this.#rules.length !== before;
  }

  clear(): void {
    this.#rules = [];
    this.#steps.clear();
  }

  list(): StoredFault[] {
    return this.#rules.map((r) => ({ ...r, rule: { ...r.rule } }));
  }

  /** True when some live rule names this step and might need the device's group resolved. */
  wantsGroup(step: FaultStep): boolean {
    if (!this.#steps.has(step)) return false;
    return this.#rules.some((r) => r.rule.step === step && r.rule.groupId !== undefined);
  }

  has(step: FaultStep): boolean {
    return this.#steps.has(step);
  }

  /** The first live rule for this step and subject, counted as used; undefined when none. */
  match(step: FaultStep, subject: FaultSubject): FaultRule | undefined {
    if (!this.#steps.has(step)) return undefined;
    for (const stored of this.#rules) {
      const rule = stored.rule;
      if (rule.step !== step) continue;
      if (stored.remaining !== undefined && stored.remaining <= 0) continue;
      if (rule.registrationId !== undefined && rule.registrationId !== subject.registrationId) continue;
      if (rule.groupId !== undefined && rule.groupId !== subject.groupId) continue;
      if (rule.probability !== undefined && !(this.#random.next() < rule.probability)) continue;
      stored.matched++;
      if (stored.remaining !== undefined) {
        stored.remaining--;
        if (stored.remaining <= 0) this.#reindex();
      }
      return rule;
    }
    return undefined;
  }

  #reindex(): void {
    this.#steps.clear();
    for (const r of this.#rules) if (r.remaining === undefined || r.remaining > 0) this.#steps.add(r.rule.step);
  }
}
