/**
 * The DPS + IoT Hub emulator for fleets and benchmarks, in this process or in a child process of
 * its own, behind one small asynchronous handle.
 *
 * On a laptop with few cores, an emulator sharing the event loop of 10,000 devices measures the
 * two together: every TLS handshake of both sides runs on one thread. In a child process the
 * service side gets its own thread (and its own file descriptor budget: 10,000 devices hold
 * 10,000 sockets on each side), and the devices' figures are theirs alone.
 *
 *   const emulator = await launchEmulator({ config, seed: 7, separateProcess: true });
 *   await emulator.call("addGroupEnrollment", { groupId: "fleet", primaryKey });
 *   const counters = await emulator.call("counters");
 *   await emulator.stop();                 // ends the child (by its pid) and waits for it
 *
 * The child is this very file run as a script: it starts the emulator from the options sent over
 * the IPC channel, answers method calls, and exits when told to stop or when its parent goes away.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Emulator, EmulatorConfig } from "../../simulator/index.js";

/** The emulator methods a handle forwards; each takes and returns plain JSON values. */
export const FORWARDED_METHODS = [
  "addIndividualEnrollment",
  "addGroupEnrollment",
  "setEnrollmentEnabled",
  "removeEnrollment",
  "setDeviceEnabled",
  "deleteDevice",
  "setHubAvailable",
  "addFault",
  "removeFault",
  "clearFaults",
  "faults",
  "registration",
  "hubs",
  "counters",
  "resetCounters",
  "clearTelemetry",
] as const;

export type ForwardedMethod = (typeof FORWARDED_METHODS)[number];
type Args<M extends ForwardedMethod> = Parameters<Emulator[M]>;
type Result<M extends ForwardedMethod> = ReturnType<Emulator[M]>;

export interface EmulatorLaunchOptions {
  readonly config: EmulatorConfig;
  readonly seed?: number;
  /** Where the CA and server certificate are kept (default .cache/emulator under the cwd). */
  readonly stateDir?: string;
  /** Highest TLS version the emulator offers (default TLS 1.3). */
  readonly tlsMaxVersion?: "TLSv1.2" | "TLSv1.3";
  /** Run it in a child process (default false: in this process). */
  readonly separateProcess?: boolean;
  /** Node flags for the child (for instance a larger heap). */
  readonly execArgv?: readonly string[];
  /** Bound on the child's start-up (default 30 s). */
  readonly startTimeoutMs?: number;
}

export interface ProcessUsage {
  /** CPU time in ms (user + system) since the process started. */
  readonly cpuMs: number;
  /** Peak resident set size in bytes. */
  readonly maxRssBytes: number;
  readonly rssBytes: number;
}

export interface EmulatorHandle {
  readonly idScope: string;
  readonly caPem: string;
  readonly seed: number;
  readonly endpoints: Emulator["endpoints"];
  /** The child's process id, when it runs in one. */
  readonly pid?: number;
  /** Calls an emulator method; rejects with the emulator's error message. */
  call<M extends ForwardedMethod>(method: M, ...args: Args<M>): Promise<Result<M>>;
  /**
   * The same method on many argument lists, in one message (a wave of disabled devices). A call
   * that throws does not stop the others; resolves with how many threw.
   */
  callMany<M extends ForwardedMethod>(method: M, argsList: readonly Args<M>[]): Promise<number>;
  /** CPU time and memory of the process the emulator runs in. */
  usage(): Promise<ProcessUsage>;
  /** Stops the emulator (and ends the child); idempotent. */
  stop(): Promise<void>;
}

export function processUsage(): ProcessUsage {
  const cpu = process.cpuUsage();
  return { cpuMs: (cpu.user + cpu.system) / 1000, maxRssBytes: process.resourceUsage().maxRSS * 1024, rssBytes: process.memoryUsage.rss() };
}

/** Starts the emulator here or in a child process. Rejects (and leaves nothing running) when it cannot start. */
export async function launchEmulator(options: EmulatorLaunchOptions): Promise<EmulatorHandle> {
  if (options.separateProcess) return launchChild(options);
  const { startEmulator } = await import("../../simulator/index.js");
  const emulator = await startEmulator({ config: options.config, seed: options.seed, stateDir: options.stateDir, tlsMaxVersion: options.tlsMaxVersion });
  const target = emulator as unknown as Record<string, (...a: unknown[]) => unknown>;
  return {
    idScope: emulator.idScope,
    caPem: emulator.caPem,
    seed: emulator.seed,
    endpoints: emulator.endpoints,
    call: async (method, ...args) => target[method](...args) as never,
    callMany: async (method, argsList) => applyMany(target, method, argsList as unknown as unknown[][]),
    usage: async () => processUsage(),
    stop: () => emulator.stop(),
  };
}

function applyMany(target: Record<string, (...a: unknown[]) => unknown>, method: string, argsList: unknown[][]): number {
  let threw = 0;
  for (const args of argsList) {
    try {
      target[method](...args);
    } catch {
      threw++; // e.g. a device of the wave that has not registered yet: counted, not fatal
    }
  }
  return threw;
}

type ChildReply =
  | { readonly kind: "ready"; readonly idScope: string; readonly caPem: string; readonly seed: number; readonly endpoints: Emulator["endpoints"] }
  | { readonly kind: "start-failed"; readonly message: string }
  | { readonly kind: "result"; readonly id: number; readonly value?: unknown; readonly error?: string };

type ChildRequest =
  | { readonly kind: "start"; readonly config: EmulatorConfig; readonly seed?: number; readonly stateDir?: string; readonly tlsMaxVersion?: "TLSv1.2" | "TLSv1.3" }
  | { readonly kind: "call"; readonly id: number; readonly method: ForwardedMethod | "usage"; readonly args: unknown[] }
  | { readonly kind: "call-many"; readonly id: number; readonly method: ForwardedMethod; readonly argsList: unknown[][] }
  | { readonly kind: "stop"; readonly id: number };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function launchChild(options: EmulatorLaunchOptions): Promise<EmulatorHandle> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--emulator-child"], {
    execArgv: [...(options.execArgv ?? [])],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));
  const request = (message: DistributiveOmit<Exclude<ChildRequest, { kind: "start" }>, "id">): Promise<unknown> => {
    if (exited) return Promise.reject(new Error("the emulator process has exited"));
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      child.send({ ...message, id });
    });
  };
  child.on("message", (m: ChildReply) => {
    if (m.kind !== "result") return;
    const waiter = pending.get(m.id);
    pending.delete(m.id);
    if (m.error !== undefined) waiter?.reject(new Error(m.error));
    else waiter?.resolve(m.value);
  });
  child.once("exit", (code) => {
    for (const w of pending.values()) w.reject(new Error(`the emulator process exited (code ${code})`));
    pending.clear();
  });
  return new Promise<EmulatorHandle>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error("the emulator process did not start within its time limit"));
    }, options.startTimeoutMs ?? 30_000);
    const onStart = (m: ChildReply) => {
      if (m.kind === "result") return;
      child.off("message", onStart);
      clearTimeout(timer);
      if (m.kind === "start-failed") {
        child.kill();
        return reject(new Error(`the emulator could not start: ${m.message}`));
      }
      let stopping: Promise<void> | undefined;
      resolve({
        idScope: m.idScope,
        caPem: m.caPem,
        seed: m.seed,
        endpoints: m.endpoints,
        pid: child.pid,
        call: (method, ...args) => request({ kind: "call", method, args }) as never,
        callMany: (method, argsList) => request({ kind: "call-many", method, argsList: argsList as unknown as unknown[][] }) as Promise<number>,
        usage: () => request({ kind: "call", method: "usage", args: [] }) as Promise<ProcessUsage>,
        stop: () =>
          (stopping ??= (async () => {
            if (!exited) {
              const bound = setTimeout(() => child.kill("SIGKILL"), 10_000);
              await request({ kind: "stop" }).catch(() => {});
              await exitedPromise;
              clearTimeout(bound);
            }
          })()),
      });
    };
    child.on("message", onStart);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the emulator process exited during start-up (code ${code})`));
    });
    child.send({ kind: "start", config: options.config, seed: options.seed, stateDir: options.stateDir, tlsMaxVersion: options.tlsMaxVersion } satisfies ChildRequest);
  });
}

async function childMain(): Promise<void> {
  const { startEmulator } = await import("../../simulator/index.js");
  let emulator: Emulator | undefined;
  const reply = (m: ChildReply) => process.send?.(m);
  const allowed = new Set<string>(FORWARDED_METHODS);
  // The parent's end of the channel closing means the parent is gone: do not outlive it.
  process.on("disconnect", () => {
    void (emulator?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
  });
  process.on("message", async (m: ChildRequest) => {
    if (m.kind === "start") {
      try {
        emulator = await startEmulator({ config: m.config, seed: m.seed, stateDir: m.stateDir, tlsMaxVersion: m.tlsMaxVersion });
        reply({ kind: "ready", idScope: emulator.idScope, caPem: emulator.caPem, seed: emulator.seed, endpoints: emulator.endpoints });
      } catch (error) {
        reply({ kind: "start-failed", message: (error as Error).message });
        process.exit(1);
      }
      return;
    }
    const target = emulator as unknown as Record<string, (...a: unknown[]) => unknown>;
    try {
      if (m.kind === "stop") {
        await emulator?.stop();
        reply({ kind: "result", id: m.id });
        process.disconnect();
        return;
      }
      if (m.method === "usage") return reply({ kind: "result", id: m.id, value: processUsage() });
      if (!allowed.has(m.method) || !emulator) throw new Error(`"${m.method}" is not an emulator method a handle forwards`);
      if (m.kind === "call-many") return reply({ kind: "result", id: m.id, value: applyMany(target, m.method, m.argsList) });
      reply({ kind: "result", id: m.id, value: target[m.method](...m.args) });
    } catch (error) {
      reply({ kind: "result", id: m.id, error: (error as Error).message });
    }
  });
}

if (process.argv[2] === "--emulator-child" && process.send) void childMain();
