// The DPS + IoT Hub emulator: startEmulator() brings up the MQTT listeners (DPS and hub, TLS and
// plain TCP), the HTTPS status lookup and the admin API on loopback, and returns a handle that
// tests and the demo drive and stop. It is an independent implementation of the service side of
// the protocol (node:crypto and mqtt-packet), and imports nothing from modules/.
import { constants as cryptoConstants, randomBytes } from "node:crypto";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { Agent as HttpsAgent, createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect, createServer as createTlsServer, type ConnectionOptions, type TLSSocket } from "node:tls";
import { adminHandler } from "./admin-server.js";
import { ensureTlsIdentity } from "./certs.js";
import { ensureIssuingCa, type CertificateIssuer } from "./issuance.js";
import { checkConfig, DEFAULT_CERTIFICATE_LIFETIME_SECONDS, DEFAULT_CONFIG, DEFAULT_SERVICE_HOST_NAME, DEFAULT_SERVICE_POLICY, loadConfigFile, type EmulatorConfig, type FaultRule, type GroupEnrollment, type IndividualEnrollment } from "./config.js";
import { DpsSession, type DpsLimits } from "./dps-session.js";
import { serviceApiHandler } from "./dps-service-api.js";
import { EmulatorError } from "./errors.js";
import { FaultBook, type StoredFault } from "./faults.js";
import { HubBroker, type MethodParams, type MethodResult } from "./hub-broker.js";
import { c2dView, serviceTwinDocument, type C2dRequest } from "./hub-features.js";
import { hubServiceHandler } from "./hub-service-server.js";
import { HubSession } from "./hub-session.js";
import { Counters, Logger, type LogLevel, type LogSink } from "./log.js";
import { connectionLimits, overdue, type ConnectionLimits } from "./limits.js";
import { lookupHandler } from "./lookup-server.js";
import type { MqttSession, SessionContext } from "./mqtt-session.js";
import { Random } from "./random.js";
import { ProvisioningService, type RegistrationRecord, type TelemetryMessage } from "./service.js";
import { SlidingKeyLimit, WindowLimit } from "./throttle.js";

export type { CertificateIssuanceConfig, TrustBundle, TrustBundleMetadata, EmulatorConfig, FaultRule, FaultStep, GroupEnrollment, HubConfig, IndividualEnrollment, MalformedKind, ReprovisionPolicy, ServiceApiConfig, ServicePolicy } from "./config.js";
export type { RegistrationRecord, TelemetryMessage } from "./service.js";
export type { LogLevel, LogSink } from "./log.js";
export { EmulatorError, HubServiceError } from "./errors.js";
export type { MethodParams, MethodResult } from "./hub-broker.js";
export type { C2dRequest } from "./hub-features.js";
export { C2D_QUEUE_LIMIT, TWIN_LIMITS } from "./hub-features.js";
export { loadConfigFile } from "./config.js";
export { deriveDeviceKey, signSasToken } from "./sas.js";

export interface EmulatorOptions {
  /** Listen address, default "127.0.0.1". */
  host?: string;
  /** 0 = ephemeral (the default for every port here; the CLI has fixed defaults). */
  dpsTlsPort?: number;
  dpsTcpPort?: number;
  /** One hub listener pair serves every emulated hub; the hub is chosen by the CONNECT user name. */
  hubTlsPort?: number;
  hubTcpPort?: number;
  /** Registration status lookup (HTTPS, same CA). */
  httpsPort?: number;
  /** The hubs' service REST API (twins, direct methods; HTTPS, same CA); one listener for every hub. */
  hubHttpsPort?: number;
  /** Admin HTTP API (plain HTTP). */
  adminPort?: number;
  /** Where the CA and server certificate are created and reused (default .cache/emulator under the cwd). */
  stateDir?: string;
  /** A config object or the path of a JSON config file (default: one scope, one hub, no enrollments). */
  config?: EmulatorConfig | string;
  /** Seeds every random choice (fault probabilities, operation ids, tracking ids, etags). */
  seed?: number;
  /** Tolerance for SAS expiry in seconds (default 300). */
  clockSkewSeconds?: number;
  /** Clock in ms for SAS expiry and rate limits (default Date.now). */
  now?: () => number;
  /** Structured log sink; default silent. */
  log?: LogSink;
  /** Level for the sink (default "info"). */
  logLevel?: LogLevel;
  /** Close connections that send no CONNECT within this time (default 10,000 ms; it starts once TLS is done). */
  connectTimeoutMs?: number;
  /**
   * MQTT connections open at once over the four listeners, TLS handshakes included (default
   * 20,000). Over it a new socket is closed as soon as it is accepted, before any TLS, counted as
   * `refused-connection-cap` and logged once per burst (`connection-cap-reached`, then
   * `connection-cap-burst-ended` with the number refused).
   */
  maxConnections?: number;
  /**
   * The largest packet a DPS connection may send (default 100 KiB: a 96 KiB register body and
   * room for its topic). A packet whose fixed header declares more closes the connection before any
   * of it is buffered (`closed-packet-budget`).
   */
  dpsMaxPacketBytes?: number;
  /** The same for the hub listeners (default 260 KiB: a 256 KiB telemetry body and room for its topic). */
  hubMaxPacketBytes?: number;
  /**
   * Once the first byte of a packet has arrived, the whole packet must arrive within this time,
   * whatever the keep-alive (default 30,000 ms; `closed-packet-timeout`).
   */
  packetTimeoutMs?: number;
  /**
   * The longest silence of a connected session, whatever its keep-alive (default 1,767,000 ms, IoT
   * Hub's 29.45 minutes): a connection is closed after 1.5 x its keep-alive or this, whichever is
   * shorter; with keep-alive 0, after this (`closed-idle-timeout`).
   */
  maxIdleMs?: number;
  /** A TLS socket that has not completed its handshake within this is destroyed (default 10,000 ms; `closed-tls-handshake-timeout`). */
  tlsHandshakeTimeoutMs?: number;
  /**
   * Whether the MQTT TLS listeners (DPS and hub) ask clients for a certificate (default true: X.509
   * attestation and X.509 hub devices need it; a client without one goes on with its SAS token).
   * false: no CertificateRequest in the handshake, for a TLS stack that mishandles one.
   */
  requestClientCertificates?: boolean;
  /** Highest TLS version offered (default "TLSv1.3"; "TLSv1.2" is cheaper per handshake). TLS 1.2 is the minimum. */
  tlsMaxVersion?: "TLSv1.2" | "TLSv1.3";
}

export interface EmulatorCounters {
  /**
   * DPS answers per status code ("202", "200", "429", ...) and CONNACK codes ("connack-0", ...);
   * CSRs of register requests: "csr-issued", "csr-refused".
   */
  dps: Record<string, number>;
  /**
   * Hub CONNACK codes ("connack-5"), "telemetry", "puback", "bad-packet"; twins: "twin-get",
   * "twin-patch", answers per status ("twin-200", "twin-204", "twin-400", "twin-429"),
   * "twin-desired-changed", "twin-desired-pushed", "twin-service-update", "twin-service-412";
   * C2D: "c2d-queued", "c2d-sent", "c2d-redelivered", "c2d-acked", "c2d-expired", "c2d-queue-full";
   * methods: "method-sent", "method-{device status}", "method-device-not-online", "method-timeout",
   * "method-late-answer". Both tables also count connections closed or refused by a limit:
   * "refused-connection-cap", "closed-packet-budget", "closed-packet-timeout",
   * "closed-connect-timeout", "closed-keepalive-timeout", "closed-idle-timeout",
   * "closed-tls-handshake-timeout".
   */
  hub: Record<string, number>;
  /** Status lookup answers per status code. */
  https: Record<string, number>;
  /** DPS service API answers per status code. */
  dpsService: Record<string, number>;
  /** The hubs' service REST API answers per status code. */
  hubService: Record<string, number>;
  /** Injected faults per step. */
  faults: Record<string, number>;
  /** MQTT connections open now (DPS and hub). */
  connections: number;
  /** Registrations completed with status "assigned" (answers, including repeats). */
  registrations: number;
  /** Distinct registration records DPS holds. */
  registrationRecords: number;
  throttled: number;
  badPackets: number;
}

export interface Emulator {
  readonly endpoints: {
    dps: { host: string; tlsPort: number; tcpPort: number };
    hub: { host: string; tlsPort: number; tcpPort: number };
    https: { host: string; port: number };
    /** The hubs' service REST API (HTTPS). */
    hubService: { host: string; port: number };
    admin: { url: string; port: number };
  };
  readonly idScope: string;
  readonly caPem: string;
  readonly caPath: string;
  /**
   * The issuing CA (PEM, ECDSA P-384, signed by `caPem`) that signs certificates from CSRs
   * (docs/EMULATOR.md, Certificate issuance); the hub accepts X.509 devices whose certificate it signed.
   */
  readonly issuingCaPem: string;
  /** The seed in use (given or drawn), to replay a run. */
  readonly seed: number;
  /**
   * The DPS service API (on the HTTPS port): the host name service tokens name (`sr`), and the
   * shared access policies with their keys (configured, or generated at start). Secrets: for the
   * backend or test that enrols devices, never for logs.
   */
  readonly serviceApi: { readonly hostName: string; readonly policies: readonly { name: string; primaryKey: string; secondaryKey: string }[] };
  /**
   * `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` for a policy (default
   * provisioningserviceowner), as the portal shows it. Throws EmulatorError(NOT_FOUND) for an unknown policy.
   */
  dpsServiceConnectionString(policyName?: string): string;
  /** Adds or replaces; throws EmulatorError when invalid or naming an unknown hub. */
  addIndividualEnrollment(e: IndividualEnrollment): void;
  addGroupEnrollment(e: GroupEnrollment): void;
  /** Throws EmulatorError(NOT_FOUND). */
  setEnrollmentEnabled(idOrGroup: { registrationId?: string; groupId?: string }, enabled: boolean): void;
  /** False when there was no such enrollment. */
  removeEnrollment(idOrGroup: { registrationId?: string; groupId?: string }): boolean;
  /** A disabled hub device gets CONNACK 5; its open connections are closed. Throws EmulatorError(NOT_FOUND). */
  setDeviceEnabled(deviceId: string, enabled: boolean, hubHostName?: string): void;
  /** Throws EmulatorError(NOT_FOUND). Open connections of the device are closed. */
  deleteDevice(deviceId: string, hubHostName?: string): void;
  /** Unavailable: CONNACK 3, and open connections to that hub are closed. Throws EmulatorError(UNKNOWN_HUB). */
  setHubAvailable(hubHostName: string, available: boolean): void;
  /**
   * The largest telemetry body the hub takes (1 to 256 KiB); a larger one closes the connection.
   * Applies at once, to open connections too. Throws EmulatorError(UNKNOWN_HUB, INVALID_ARGUMENT).
   */
  setHubMaxMessageBytes(hubHostName: string, bytes: number): void;
  /** Returns the rule's id. Throws EmulatorError(INVALID_CONFIG) for an invalid rule. */
  addFault(rule: FaultRule): number;
  removeFault(id: number): boolean;
  clearFaults(): void;
  faults(): StoredFault[];
  registrations(): RegistrationRecord[];
  registration(registrationId: string): RegistrationRecord | undefined;
  deleteRegistration(registrationId: string): boolean;
  enrollments(): ReturnType<ProvisioningService["enrollments"]>;
  devices(): ReturnType<ProvisioningService["devices"]>;
  hubs(): ReturnType<ProvisioningService["hubsSummary"]>;
  counters(): EmulatorCounters;
  resetCounters(): void;
  telemetry(deviceId?: string): TelemetryMessage[];
  clearTelemetry(): void;
  /**
   * Queues a cloud-to-device message; it is delivered at once when the device is connected and
   * subscribed, else on its next subscription, until it is acknowledged or expires. Returns the
   * message id. Throws HubServiceError: 404 (404001) no such device, 403 (403004) 50 messages
   * already waiting, 400 (400004) a bad message.
   */
  sendC2D(deviceId: string, message: C2dRequest, hubHostName?: string): string;
  /** Messages waiting for the device's PUBACK (expired ones dropped first). Throws HubServiceError(404). */
  pendingC2D(deviceId: string, hubHostName?: string): Record<string, unknown>[];
  /** Forgets the device's waiting messages; returns how many. Throws HubServiceError(404). */
  purgeC2D(deviceId: string, hubHostName?: string): number;
  /**
   * Invokes a direct method. Resolves with the device's status and payload; rejects with
   * HubServiceError 404 (404103 DeviceNotOnline), 504 (504101 GatewayTimeout), 404 (404001), 400.
   */
  invokeMethod(deviceId: string, params: MethodParams, hubHostName?: string): Promise<MethodResult>;
  /** The twin as the service API returns it. Throws HubServiceError(404). */
  twin(deviceId: string, hubHostName?: string): Record<string, unknown>;
  /**
   * Patches tags and desired properties (`{"tags":{},"properties":{"desired":{}}}`); `replace`
   * replaces them instead. Throws HubServiceError 412 on a stale etag, 400 on a bad patch, 404.
   */
  updateTwin(deviceId: string, patch: object, options?: { etag?: string; replace?: boolean; hubHostName?: string }): Record<string, unknown>;
  /** `HostName={hub};SharedAccessKeyName={policy};SharedAccessKey=...` (default: the first hub, iothubowner). Throws EmulatorError(UNKNOWN_HUB, NOT_FOUND). */
  hubServiceConnectionString(hubHostName?: string, keyName?: string): string;
  /**
   * An https.Agent that sends every request to the hub service listener (127.0.0.1:port) and
   * trusts the emulator's CA, keeping the hub's name for SNI and the Host header: give it to the
   * official service SDK (docs/EMULATOR.md, "Pointing a backend at the emulator").
   */
  serviceAgent(): HttpsAgent;
  /** Closes listeners and every open socket; idempotent. */
  stop(): Promise<void>;
}

const SWEEP_MS = 250;
/** A burst of refusals over the connection cap ends after this long without one (then one log line sums it up). */
const REFUSAL_BURST_MS = 1000;

class EmulatorImpl implements Emulator {
  endpoints!: Emulator["endpoints"];
  readonly idScope: string;
  readonly caPem: string;
  readonly caPath: string;
  readonly issuingCaPem: string;
  readonly seed: number;
  readonly serviceApi: Emulator["serviceApi"];
  readonly #service: ProvisioningService;
  readonly #skewSeconds: number;
  readonly #faults: FaultBook;
  readonly #counters = new Counters();
  readonly #log: Logger;
  readonly #sessions = new Set<MqttSession>();
  /** Every socket the MQTT listeners accepted and that is not closed yet (TLS ones from before their handshake). */
  readonly #sockets = new Set<Socket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #limits: DpsLimits;
  readonly #ctx: SessionContext;
  readonly #broker: HubBroker;
  readonly #mqttServers: TcpServer[] = [];
  readonly #httpServers: (HttpServer | HttpsServer)[] = [];
  #sweeper: NodeJS.Timeout | undefined;
  #sweeps = 0;
  #stopping: Promise<void> | undefined;
  #closeAdmin: () => void = () => {};
  readonly #connectionLimits: ConnectionLimits;
  /** Sockets refused over the cap in the current burst, and when the last one was. */
  #refusedInBurst = 0;
  #lastRefusalAt = 0;

  constructor(options: EmulatorOptions, config: EmulatorConfig, identity: { caPem: string; caPath: string }, issuer: CertificateIssuer) {
    const random = new Random(options.seed);
    this.seed = random.seed;
    this.idScope = config.idScope;
    this.caPem = identity.caPem;
    this.caPath = identity.caPath;
    this.#log = new Logger(options.log, options.logLevel ?? "info");
    this.#skewSeconds = options.clockSkewSeconds ?? 300;
    this.#service = new ProvisioningService(config, random, this.#skewSeconds);
    // Generated keys come from node:crypto, not the seeded generator: they are secrets, and drawing
    // them from the seed would shift every seeded choice after them.
    const generated = (): string => randomBytes(32).toString("base64");
    this.serviceApi = Object.freeze({
      hostName: config.serviceApi?.hostName ?? DEFAULT_SERVICE_HOST_NAME,
      policies: Object.freeze(
        (config.serviceApi?.policies ?? [{ name: DEFAULT_SERVICE_POLICY }]).map((p) =>
          Object.freeze({ name: p.name, primaryKey: p.primaryKey ?? generated(), secondaryKey: p.secondaryKey ?? generated() }),
        ),
      ),
    });
    this.#faults = new FaultBook(random);
    for (const rule of config.faults ?? []) this.#faults.add(rule);
    this.#connectionLimits = connectionLimits(options);
    const limits = config.limits ?? {};
    this.#limits = {
      registrations: new WindowLimit(limits.registrationsPerMinute ?? 1000),
      operations: new WindowLimit(limits.operationsPerMinute ?? 1000),
      pollsPerDevice: new SlidingKeyLimit(limits.pollsPerDevicePer10s ?? 5, 10_000),
    };
    const now = options.now ?? Date.now;
    this.#broker = new HubBroker(this.#service, this.#counters, this.#log, now, limits.twinOperationsPerSecond);
    this.#ctx = {
      service: this.#service,
      broker: this.#broker,
      faults: this.#faults,
      log: this.#log,
      counters: this.#counters,
      limits: this.#connectionLimits,
      now,
      later: (ms, fn) => {
        const timer = setTimeout(() => {
          this.#timers.delete(timer);
          fn();
        }, ms);
        this.#timers.add(timer);
      },
      forget: (session) => this.#sessions.delete(session),
      issuance: {
        issuer,
        enabled: config.certificateIssuance?.enabled ?? true,
        lifetimeSeconds: config.certificateIssuance?.lifetimeSeconds ?? DEFAULT_CERTIFICATE_LIFETIME_SECONDS,
      },
    };
    this.issuingCaPem = issuer.certPem;
  }

  async listen(options: EmulatorOptions, tls: { certPem: string; keyPem: string; caPem: string }): Promise<void> {
    const host = options.host ?? "127.0.0.1";
    // Nagle off on every listener (tls.Server passes its options down to net.Server). No session
    // tickets: devices do not resume sessions, and issuing tickets costs every handshake.
    const tlsOptions = {
      // The whole chain, as Azure's endpoints send it: some TLS stacks (the Moddable SDK's among
      // them) check the server name only when the chain has more than the leaf.
      cert: tls.certPem + tls.caPem,
      key: tls.keyPem,
      minVersion: "TLSv1.2" as const,
      maxVersion: options.tlsMaxVersion ?? ("TLSv1.3" as const),
      secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
      noDelay: true,
      // Node's own deadline for the handshake; the socket is destroyed in tlsClientError below
      // (with a tlsClientError listener, Node reports the timeout but leaves the socket open).
      handshakeTimeout: this.#connectionLimits.tlsHandshakeTimeoutMs,
    };
    const mqtt = (kind: "dps" | "hub", secure: boolean): TcpServer => {
      const accept = (socket: Socket): void => {
        const session =
          kind === "dps"
            ? new DpsSession(socket, this.#ctx, secure ? "tls" : "tcp", this.#limits)
            : new HubSession(socket, this.#ctx, secure ? "tls" : "tcp");
        this.#sessions.add(session);
        if (session.closed) this.#sessions.delete(session);
      };
      let server: TcpServer;
      if (secure) {
        // DPS and the hub ask for a client certificate (X.509 devices) and judge it themselves
        // (simulator/service.ts, simulator/hub-session.ts): a device without one goes on with its SAS token.
        const tlsServer = createTlsServer(options.requestClientCertificates === false ? tlsOptions : { ...tlsOptions, requestCert: true, rejectUnauthorized: false });
        // Runs after Node has wrapped the socket in a TLSSocket, before any byte of it is read.
        tlsServer.on("connection", (raw: Socket) => this.#admit(kind, raw));
        tlsServer.on("secureConnection", (socket: TLSSocket) => accept(socket));
        tlsServer.on("tlsClientError", (error: NodeJS.ErrnoException, socket: TLSSocket) => {
          if (error.code === "ERR_TLS_HANDSHAKE_TIMEOUT") {
            Counters.bump(kind === "dps" ? this.#counters.dps : this.#counters.hub, "closed-tls-handshake-timeout");
            if (this.#log.enabled("info")) this.#log.info("connection-closed", { endpoint: kind, remote: socket.remoteAddress, reason: "tls-handshake-timeout", timeoutMs: this.#connectionLimits.tlsHandshakeTimeoutMs });
          } else if (this.#log.enabled("debug")) {
            this.#log.debug("tls-handshake-failed", { endpoint: kind, code: error.code, message: error.message });
          }
          socket.destroy();
        });
        server = tlsServer;
      } else {
        server = createTcpServer({ noDelay: true }, (socket: Socket) => {
          if (this.#admit(kind, socket)) accept(socket);
        });
      }
      server.on("error", (error) => this.#log.error("listener-error", { endpoint: kind, message: error.message }));
      this.#mqttServers.push(server);
      return server;
    };
    const dpsTls = mqtt("dps", true);
    const dpsTcp = mqtt("dps", false);
    const hubTls = mqtt("hub", true);
    const hubTcp = mqtt("hub", false);
    const serviceApi = serviceApiHandler({
      service: this.#service,
      log: this.#log,
      counters: this.#counters,
      now: this.#ctx.now,
      hostName: this.serviceApi.hostName,
      policies: new Map(this.serviceApi.policies.map((p) => [p.name, [Buffer.from(p.primaryKey, "base64"), Buffer.from(p.secondaryKey, "base64")]])),
      skewSeconds: this.#skewSeconds,
    });
    const https = createHttpsServer(tlsOptions, lookupHandler(this.#ctx, this.#limits.operations, serviceApi));
    const hubService = createHttpsServer(tlsOptions, hubServiceHandler(this.#ctx, this.#broker));
    const adminRoutes = adminHandler(this);
    this.#closeAdmin = () => adminRoutes.close();
    const admin = createHttpServer(adminRoutes);
    this.#httpServers.push(https, hubService, admin);
    try {
      const [dpsTlsPort, dpsTcpPort, hubTlsPort, hubTcpPort, httpsPort, hubServicePort, adminPort] = await Promise.all([
        listenOn(dpsTls, host, options.dpsTlsPort ?? 0),
        listenOn(dpsTcp, host, options.dpsTcpPort ?? 0),
        listenOn(hubTls, host, options.hubTlsPort ?? 0),
        listenOn(hubTcp, host, options.hubTcpPort ?? 0),
        listenOn(https, host, options.httpsPort ?? 0),
        listenOn(hubService, host, options.hubHttpsPort ?? 0),
        listenOn(admin, host, options.adminPort ?? 0),
      ]);
      const urlHost = host.includes(":") ? `[${host}]` : host;
      this.endpoints = {
        dps: { host, tlsPort: dpsTlsPort, tcpPort: dpsTcpPort },
        hub: { host, tlsPort: hubTlsPort, tcpPort: hubTcpPort },
        https: { host, port: httpsPort },
        hubService: { host, port: hubServicePort },
        admin: { url: `http://${urlHost}:${adminPort}`, port: adminPort },
      };
    } catch (error) {
      await this.stop();
      throw error;
    }
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
    this.#sweeper.unref();
    this.#log.info("emulator-started", { endpoints: this.endpoints, idScope: this.idScope, caPath: this.caPath, seed: this.seed });
  }

  /**
   * Takes a socket a listener accepted into the books, or closes it at once when the connection
   * cap is reached (before any TLS: no handshake is paid for a socket that will not be served).
   * Returns whether it was admitted.
   */
  #admit(kind: "dps" | "hub", socket: Socket): boolean {
    if (this.#sockets.size >= this.#connectionLimits.maxConnections) {
      Counters.bump(kind === "dps" ? this.#counters.dps : this.#counters.hub, "refused-connection-cap");
      if (this.#refusedInBurst === 0) {
        this.#log.warn("connection-cap-reached", { endpoint: kind, maxConnections: this.#connectionLimits.maxConnections });
      }
      this.#refusedInBurst++;
      this.#lastRefusalAt = Date.now();
      socket.destroy();
      return false;
    }
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    return true;
  }

  /** The deadlines of simulator/limits.ts (connect, keep-alive, idle, packet under way), and the end of a burst of refusals. */
  #sweep(): void {
    const now = Date.now();
    for (const session of this.#sessions) {
      if (session.closed) continue;
      const reason = overdue(session, now, this.#connectionLimits);
      if (reason) session.closeForLimit(reason);
    }
    if (this.#refusedInBurst > 0 && now - this.#lastRefusalAt >= REFUSAL_BURST_MS) {
      this.#log.info("connection-cap-burst-ended", { refused: this.#refusedInBurst, maxConnections: this.#connectionLimits.maxConnections });
      this.#refusedInBurst = 0;
    }
    if (++this.#sweeps % 40 === 0) {
      this.#limits.pollsPerDevice.prune(this.#ctx.now());
      this.#broker.sweep();
    }
  }

  dpsServiceConnectionString(policyName: string = DEFAULT_SERVICE_POLICY): string {
    const policy = this.serviceApi.policies.find((p) => p.name === policyName);
    if (!policy) throw new EmulatorError("NOT_FOUND", `no service policy ${policyName} (${this.serviceApi.policies.map((p) => p.name).join(", ")})`);
    return `HostName=${this.serviceApi.hostName};SharedAccessKeyName=${policy.name};SharedAccessKey=${policy.primaryKey}`;
  }

  addIndividualEnrollment(e: IndividualEnrollment): void {
    this.#service.addIndividualEnrollment(e);
    this.#log.info("enrollment-added", { registrationId: e.registrationId });
  }
  addGroupEnrollment(e: GroupEnrollment): void {
    this.#service.addGroupEnrollment(e);
    this.#log.info("enrollment-added", { groupId: e.groupId });
  }
  setEnrollmentEnabled(which: { registrationId?: string; groupId?: string }, enabled: boolean): void {
    this.#service.setEnrollmentEnabled(which, enabled);
    this.#log.info("enrollment-changed", { ...which, enabled });
  }
  removeEnrollment(which: { registrationId?: string; groupId?: string }): boolean {
    const removed = this.#service.removeEnrollment(which);
    if (removed) this.#log.info("enrollment-removed", { ...which });
    return removed;
  }
  setDeviceEnabled(deviceId: string, enabled: boolean, hubHostName?: string): void {
    const devices = this.#service.setDeviceEnabled(deviceId, enabled, hubHostName);
    this.#log.info("device-changed", { deviceId, hub: hubHostName, enabled });
    if (!enabled) this.#closeHubSessions((s) => s.device !== undefined && devices.includes(s.device), "device-disabled");
  }
  deleteDevice(deviceId: string, hubHostName?: string): void {
    const devices = this.#service.deleteDevice(deviceId, hubHostName);
    this.#log.info("device-deleted", { deviceId, hub: hubHostName });
    this.#closeHubSessions((s) => s.device !== undefined && devices.includes(s.device), "device-deleted");
  }
  setHubAvailable(hubHostName: string, available: boolean): void {
    this.#service.setHubAvailable(hubHostName, available);
    this.#log.info("hub-changed", { hub: hubHostName, available });
    if (!available) this.#closeHubSessions((s) => s.hubHostName?.toLowerCase() === hubHostName.toLowerCase(), "hub-unavailable");
  }
  setHubMaxMessageBytes(hubHostName: string, bytes: number): void {
    this.#service.setHubMaxMessageBytes(hubHostName, bytes);
    this.#log.info("hub-changed", { hub: hubHostName, maxMessageBytes: bytes });
  }
  #closeHubSessions(which: (s: HubSession) => boolean, reason: string): void {
    for (const s of this.#sessions) if (s instanceof HubSession && s.connected && which(s)) s.close(reason);
  }
  addFault(rule: FaultRule): number {
    const id = this.#faults.add(rule);
    this.#log.info("fault-added", { id, rule });
    return id;
  }
  removeFault(id: number): boolean {
    return this.#faults.remove(id);
  }
  clearFaults(): void {
    this.#faults.clear();
  }
  faults(): StoredFault[] {
    return this.#faults.list();
  }
  registrations(): RegistrationRecord[] {
    return this.#service.registrations();
  }
  registration(registrationId: string): RegistrationRecord | undefined {
    return this.#service.registration(registrationId);
  }
  deleteRegistration(registrationId: string): boolean {
    return this.#service.deleteRegistration(registrationId);
  }
  enrollments(): ReturnType<ProvisioningService["enrollments"]> {
    return this.#service.enrollments();
  }
  devices(): ReturnType<ProvisioningService["devices"]> {
    return this.#service.devices();
  }
  hubs(): ReturnType<ProvisioningService["hubsSummary"]> {
    return this.#service.hubsSummary();
  }
  counters(): EmulatorCounters {
    const c = this.#counters;
    return {
      dps: { ...c.dps },
      hub: { ...c.hub },
      https: { ...c.https },
      dpsService: { ...c.dpsService },
      hubService: { ...c.hubService },
      faults: { ...c.faults },
      connections: this.#sessions.size,
      registrations: c.assigned,
      registrationRecords: this.#service.registrationCount,
      throttled: c.throttled,
      badPackets: c.badPackets,
    };
  }
  resetCounters(): void {
    this.#counters.reset();
  }
  telemetry(deviceId?: string): TelemetryMessage[] {
    return this.#service.telemetry(deviceId);
  }
  clearTelemetry(): void {
    this.#service.clearTelemetry();
  }

  sendC2D(deviceId: string, message: C2dRequest, hubHostName?: string): string {
    const device = this.#broker.device(deviceId, hubHostName);
    const id = this.#broker.sendC2d(device, message);
    if (this.#log.enabled("debug")) this.#log.debug("c2d-queued", { deviceId, hub: device.hubHostName, messageId: id });
    return id;
  }
  pendingC2D(deviceId: string, hubHostName?: string): Record<string, unknown>[] {
    const device = this.#broker.device(deviceId, hubHostName);
    this.#broker.dropExpired(device);
    return device.c2d.map(c2dView);
  }
  purgeC2D(deviceId: string, hubHostName?: string): number {
    const device = this.#broker.device(deviceId, hubHostName);
    const n = device.c2d.length;
    device.c2d = [];
    return n;
  }
  invokeMethod(deviceId: string, params: MethodParams, hubHostName?: string): Promise<MethodResult> {
    let device;
    try {
      device = this.#broker.device(deviceId, hubHostName);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#broker.invoke(device, params);
  }
  twin(deviceId: string, hubHostName?: string): Record<string, unknown> {
    const device = this.#broker.device(deviceId, hubHostName);
    return serviceTwinDocument(device, this.#broker.isConnected(device), new Date(this.#ctx.now()).toISOString());
  }
  updateTwin(deviceId: string, patch: object, options: { etag?: string; replace?: boolean; hubHostName?: string } = {}): Record<string, unknown> {
    const device = this.#broker.device(deviceId, options.hubHostName);
    this.#broker.updateTwin(device, patch, options);
    return this.twin(deviceId, device.hubHostName);
  }
  hubServiceConnectionString(hubHostName?: string, keyName = "iothubowner"): string {
    const hubs = this.#service.hubsSummary();
    const hub = hubHostName === undefined ? hubs[0] : hubs.find((h) => h.hostName.toLowerCase() === hubHostName.toLowerCase());
    if (!hub) throw new EmulatorError("UNKNOWN_HUB", `no hub ${hubHostName}`);
    const policy = hub.sharedAccessPolicies.find((p) => p.keyName === keyName);
    if (!policy) throw new EmulatorError("NOT_FOUND", `hub ${hub.hostName} has no shared access policy ${keyName}`);
    return `HostName=${hub.hostName};SharedAccessKeyName=${policy.keyName};SharedAccessKey=${policy.primaryKey}`;
  }
  serviceAgent(): HttpsAgent {
    const { host, port } = this.endpoints.hubService;
    const ca = this.caPem;
    const agent = new HttpsAgent({ keepAlive: false, ca });
    // The SDK asks for {hub}:443; the socket goes to the listener, SNI and Host keep the hub's name.
    (agent as unknown as { createConnection: (o: ConnectionOptions & { host?: string }, cb?: () => void) => TLSSocket }).createConnection = (o) =>
      tlsConnect({ ...o, host, port, ca, servername: o.servername ?? o.host });
    return agent;
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#closeAdmin();
    this.#broker.close();
    if (this.#sweeper) clearInterval(this.#sweeper);
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const closing: Promise<void>[] = [];
    for (const server of [...this.#mqttServers, ...this.#httpServers]) {
      if (!server.listening) continue;
      closing.push(new Promise((resolve) => server.close(() => resolve())));
    }
    for (const session of this.#sessions) session.socket.destroy();
    for (const socket of this.#sockets) socket.destroy();
    for (const server of this.#httpServers) server.closeAllConnections();
    await Promise.all(closing);
    this.#log.info("emulator-stopped", {});
  }
}

function listenOn(server: TcpServer | HttpServer | HttpsServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.once("error", onError);
    server.listen({ host, port }, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Starts the emulator. Rejects with EmulatorError for a bad config or a bad limit option (not a
 * positive integer), or with the listener's error (EADDRINUSE...) when a port cannot be bound;
 * nothing is left running in either case.
 */
export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const config =
    typeof options.config === "string" ? loadConfigFile(options.config) : checkConfig(options.config ?? DEFAULT_CONFIG);
  if (options.seed !== undefined && !Number.isInteger(options.seed)) throw new EmulatorError("INVALID_ARGUMENT", "seed must be an integer");
  connectionLimits(options); // throws EmulatorError(INVALID_ARGUMENT) for a bad limit, before anything is created
  const stateDir = options.stateDir ?? join(process.cwd(), ".cache", "emulator");
  const identity = await ensureTlsIdentity(stateDir);
  const issuer = await ensureIssuingCa(stateDir, identity);
  const emulator = new EmulatorImpl(options, config, identity, issuer);
  await emulator.listen(options, identity);
  return emulator;
}
