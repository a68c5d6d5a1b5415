// The DPS side of one device connection: CONNECT checks, the response subscription, register and
// poll requests with their rate limits and fault rules, and answers on
// `$dps/registrations/res/{status}/?$rid={rid}[&retry-after=N]`.
//
//   device                                     emulator
//   CONNECT  user 0ne00000001/registrations/dev-1/api-version=2019-03-31
//   SUBSCRIBE $dps/registrations/res/#          SUBACK [1]
//   PUBLISH  $dps/registrations/PUT/iotdps-register/?$rid=1  {"registrationId":"dev-1"}
//                                              PUBACK; PUBLISH .../res/202/?$rid=1&retry-after=3
//                                                 {"operationId":"4.1f0c...","status":"assigning"}
//   PUBLISH  $dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.1f0c...
//                                              PUBACK; PUBLISH .../res/200/?$rid=2
//                                                 {"operationId":"4.1f0c...","status":"assigned","registrationState":{...}}
import type { Socket } from "node:net";
import type { IConnectPacket, IPublishPacket, ISubscribePacket } from "mqtt-packet";
import type { FaultRule, MalformedKind } from "./config.js";
import type { FaultSubject } from "./faults.js";
import { Counters } from "./log.js";
import { MqttSession, peerCertificateChainOf, type SessionContext } from "./mqtt-session.js";
import { parseSasToken } from "./sas.js";
import { breakChain } from "./issuance.js";
import type { Answer, CsrOutcome, DeviceCredential } from "./service.js";
import type { SlidingKeyLimit, WindowLimit } from "./throttle.js";
import { DPS_CSR_API_VERSION, DPS_RESPONSE_FILTER, dpsResponseTopic, parseDpsRequestTopic, parseDpsUserName } from "./topics.js";

/** The service-wide limits, shared by every DPS session of one emulator. */
export interface DpsLimits {
  registrations: WindowLimit;
  operations: WindowLimit;
  pollsPerDevice: SlidingKeyLimit;
}

export class DpsSession extends MqttSession {
  readonly endpoint = "dps" as const;
  readonly #limits: DpsLimits;
  registrationId: string | undefined;
  #idScope = "";
  #apiVersion = "";
  #token: DeviceCredential = "missing-token";
  /** Granted QoS of the response subscription; -1 until the device subscribes. */
  #responseQos = -1;

  constructor(socket: Socket, ctx: SessionContext, transport: "tls" | "tcp", limits: DpsLimits) {
    super(socket, ctx, transport);
    this.#limits = limits;
  }

  clientLabel(): string | undefined {
    return this.registrationId;
  }

  #subject(step: "connect" | "subscribe" | "register" | "poll" | "issuance"): FaultSubject {
    const registrationId = this.registrationId;
    if (registrationId === undefined || !this.ctx.faults.wantsGroup(step)) return { registrationId };
    return { registrationId, groupId: this.ctx.service.groupOf(registrationId, this.#token, this.ctx.now()) };
  }

  protected onConnect(packet: IConnectPacket): void {
    if (packet.protocolVersion !== 4) return this.connack(1);
    if (!packet.clientId) return this.connack(2);
    this.registrationId = packet.clientId;
    // The token is parsed now and checked on each request (the enrollment may change meanwhile).
    // An empty password with a TLS client certificate is X.509 attestation.
    const chain = packet.password === undefined || packet.password.length === 0 ? peerCertificateChainOf(this.socket) : undefined;
    this.#token = chain !== undefined ? { x509: chain } : parseSasToken(packet.password);
    this.withFault("connect", this.#subject("connect"), {
      connack: (code) => this.connack(code),
      status: (rule) => this.connack(connackForStatus(rule.status ?? 500)),
      proceed: () => {
        const user = parseDpsUserName(packet.username);
        if (!user.ok) {
          this.ctx.log.info("dps-bad-username", { client: this.registrationId, problem: user.problem });
          return this.connack(4);
        }
        if (user.registrationId !== packet.clientId) {
          this.ctx.log.info("dps-bad-username", { client: this.registrationId, problem: "registration id in user name differs from client id" });
          return this.connack(2);
        }
        this.#idScope = user.idScope;
        this.#apiVersion = user.apiVersion;
        this.connack(0);
        if (this.ctx.log.enabled("debug")) this.ctx.log.debug("dps-connected", { client: this.registrationId, transport: this.transport, apiVersion: user.apiVersion });
      },
    });
  }

  protected onSubscribe(packet: ISubscribePacket): void {
    this.withFault("subscribe", this.#subject("subscribe"), {
      status: () => this.suback(packet.messageId, packet.subscriptions.map(() => 0x80)),
      proceed: () => {
        const granted = packet.subscriptions.map((s) => {
          if (s.topic !== DPS_RESPONSE_FILTER) return 0x80;
          const qos = Math.min(s.qos, 1);
          this.#responseQos = qos;
          return qos;
        });
        this.suback(packet.messageId, granted);
      },
    });
  }

  protected onPublish(packet: IPublishPacket): void {
    const request = parseDpsRequestTopic(packet.topic);
    if (request.kind === "unknown") return this.protocolError(`publish to a topic DPS does not serve: ${packet.topic.slice(0, 80)}`);
    if (request.rid === undefined) return this.protocolError("request topic without $rid");
    const rid = request.rid;
    // The request is acknowledged at once (QoS 2 downgraded to 1, as DPS does), unless a fault drops it.
    const acknowledge = (rule?: FaultRule): void => {
      if (packet.qos > 0 && !rule?.drop) this.puback(packet.messageId);
    };
    if (request.kind === "register") {
      const body = typeof packet.payload === "string" ? packet.payload : packet.payload.toString("utf8");
      this.withFault("register", this.#subject("register"), {
        first: acknowledge,
        status: (rule) => this.#answer(rid, this.#faultAnswer(rule), rule.malformed),
        proceed: (rule) => {
          const csr = this.#csrOf(body);
          if (csr === undefined) return this.#answer(rid, this.#register(body), rule?.malformed);
          this.#registerWithCsr(rid, body, csr, rule?.malformed);
        },
      });
      return;
    }
    const operationId = request.operationId;
    this.withFault("poll", this.#subject("poll"), {
      first: acknowledge,
      status: (rule) => this.#answer(rid, this.#faultAnswer(rule), rule.malformed),
      proceed: (rule) => this.#answer(rid, this.#poll(operationId), rule?.malformed),
    });
  }

  #register(body: string): Answer {
    const now = this.ctx.now();
    const wait = this.#limits.registrations.take(now);
    if (wait > 0) return this.#throttled(now, wait);
    return this.ctx.service.register(this.registrationId as string, this.#token, body, now, this.#idScope);
  }

  /**
   * The `csr` of a register body, when the connection's API version takes one
   * (2025-07-01-preview): `{"registrationId":"dev-1","csr":"MIIB..."}`. Older versions ignore the
   * field, as the service does for fields it does not know. A body that is not JSON is the
   * service's to refuse.
   */
  #csrOf(body: string): unknown {
    if (this.#apiVersion < DPS_CSR_API_VERSION) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return undefined;
    }
    return typeof parsed === "object" && parsed !== null ? (parsed as { csr?: unknown }).csr : undefined;
  }

  /** A register request with a CSR: the `issuance` fault step, then the (asynchronous) signing, then the service. */
  #registerWithCsr(rid: string, body: string, csr: unknown, malformed: MalformedKind | undefined): void {
    const now = this.ctx.now();
    const wait = this.#limits.registrations.take(now);
    if (wait > 0) return this.#answer(rid, this.#throttled(now, wait), malformed);
    const registrationId = this.registrationId as string;
    const issue = (outcome: CsrOutcome): void => {
      if (this.closed) return;
      Counters.bump(this.ctx.counters.dps, outcome.ok ? "csr-issued" : "csr-refused");
      if (!outcome.ok) this.ctx.log.info("dps-csr-refused", { client: registrationId, problem: outcome.problem });
      this.#answer(rid, this.ctx.service.register(registrationId, this.#token, body, this.ctx.now(), this.#idScope, outcome), malformed);
    };
    const { issuer, enabled, lifetimeSeconds } = this.ctx.issuance;
    this.withFault("issuance", this.#subject("issuance"), {
      status: (rule) => issue({ ok: false, problem: "certificate issuance refused (fault)", status: rule.status, errorCode: rule.errorCode }),
      proceed: (rule) => {
        if (!enabled) return issue({ ok: false, problem: "certificate issuance is not enabled on this DPS (certificateIssuance.enabled is false)" });
        if (typeof csr !== "string") return issue({ ok: false, problem: "csr must be a string: the base64 of the DER PKCS#10 request" });
        issuer.issue(csr, registrationId, this.ctx.now(), lifetimeSeconds).then(
          (result) => {
            if (!result.ok) return issue(result);
            const chain = rule?.malformed === undefined ? result.chain : breakChain(result.chain, rule.malformed);
            issue({ ok: true, chain, thumbprint: result.thumbprint, notAfter: result.notAfter });
          },
          (error: Error) => issue({ ok: false, problem: `the certificate could not be issued: ${error.message}`, status: 500, errorCode: 500001 }),
        );
      },
    });
  }

  #poll(operationId: string | undefined): Answer {
    const now = this.ctx.now();
    const registrationId = this.registrationId as string;
    const wait = Math.max(this.#limits.operations.take(now), this.#limits.pollsPerDevice.take(registrationId, now));
    if (wait > 0) return this.#throttled(now, wait);
    return this.ctx.service.poll(registrationId, this.#token, operationId, now, this.#idScope);
  }

  #throttled(now: number, wait: number): Answer {
    this.ctx.counters.throttled++;
    return this.ctx.service.error(429, now, "throttled", 429001, undefined, wait);
  }

  #faultAnswer(rule: FaultRule): Answer {
    const status = rule.status ?? 500;
    const retryAfter = rule.retryAfter ?? (status === 429 ? this.ctx.service.retryAfterSeconds : undefined);
    return this.ctx.service.error(status, this.ctx.now(), "fault", rule.errorCode, undefined, retryAfter);
  }

  #answer(rid: string, answer: Answer, malformed: MalformedKind | undefined): void {
    if (this.closed) return;
    Counters.bump(this.ctx.counters.dps, answer.status);
    if (answer.status === 200 && answer.body.status === "assigned") this.ctx.counters.assigned++;
    if (answer.status >= 300 && this.ctx.log.enabled("info")) {
      this.ctx.log.info("dps-error-answer", { client: this.registrationId, status: answer.status, errorCode: answer.body.errorCode, reason: answer.reason });
    }
    if (this.#responseQos < 0) {
      // Like any broker: no subscription, no delivery. A device that forgot to subscribe waits forever.
      this.ctx.log.warn("dps-answer-undeliverable", { client: this.registrationId, status: answer.status, reason: "no subscription to " + DPS_RESPONSE_FILTER });
      return;
    }
    const payload = malformed === undefined ? JSON.stringify(answer.body) : malform(answer.body, malformed);
    this.publish(dpsResponseTopic(answer.status, rid, answer.retryAfter), payload, this.#responseQos as 0 | 1);
  }
}

/** A CONNECT-step fault given as an HTTP status, in MQTT terms. */
export function connackForStatus(status: number): number {
  if (status === 401 || status === 403 || status === 404) return 5;
  if (status === 400 || status === 405 || status === 409 || status === 412 || status === 415) return 4;
  return 3; // 429, 5xx: server unavailable
}

/** The deliberately broken bodies of the `malformed` fault. */
export function malform(body: Record<string, unknown>, kind: MalformedKind): string {
  switch (kind) {
    case "non-json":
      return "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>";
    case "missing-operation-id": {
      const { operationId: _dropped, ...rest } = body;
      return JSON.stringify(rest);
    }
    case "wrong-types": {
      const out: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(body)) {
        if (typeof value === "string") out[key] = value.length;
        else if (typeof value === "number") out[key] = String(value);
        else if (typeof value === "object" && value !== null) out[key] = JSON.stringify(value);
        else out[key] = [value];
      }
      return JSON.stringify(out);
    }
    case "truncated": {
      const text = JSON.stringify(body);
      return text.slice(0, Math.max(1, Math.floor(text.length / 2)));
    }
    case "bad-signature":
    case "missing-issuer":
      // Kinds of the issuance step (simulator/issuance.ts, breakChain); checkFaultRule keeps them off whole bodies.
      return JSON.stringify(body);
  }
}
