/**
 * Scripted transcripts of the registration machine: one per row of the DPS troubleshooting table
 * (plus 403 and 503), per CONNACK code, per dropped connection, per malformed answer, per odd
 * retry-after. Each names the commands that must follow, in order, and the outcome. The same list
 * runs on Node (test/registration.test.ts) and on XS (test/xs/registration.xs.ts), and the two
 * command logs must be identical.
 */
import {
  answer,
  assignedBody,
  assignedState,
  assigning,
  closed,
  connack,
  errorBody,
  lookupAnswer,
  suback,
  timer,
  type Step,
  type Transcript,
} from "../support/transcript.js";

const REGISTER = "publish $dps/registrations/PUT/iotdps-register/?$rid=";
const POLL = "publish $dps/registrations/GET/iotdps-get-operationstatus/?$rid=";

/** CONNECT accepted and subscription granted (register already pipelined). */
const open: Step[] = [connack(0), suback(1)];

/** The register (rid 1) answered 202, polled once (rid 2), answered 200. */
const happy: Step[] = [...open, answer(202, 1, assigning, { retryAfter: "3" }), timer(), answer(200, 2, assignedBody)];

export const transcripts: Transcript[] = [
  {
    name: "happy path: pipelined connect, register, 202, poll after retry-after, 200 assigned",
    steps: happy,
    expect: [
      "status connecting attempt=0",
      "connect dps.example:8883 client=dev-001 user=0ne00000001/registrations/dev-001/api-version=2019-03-31 keepalive=60 max-packet=16384 token-expires=+3600s",
      "subscribe $dps/registrations/res/# qos=1",
      "status registering attempt=0",
      'publish $dps/registrations/PUT/iotdps-register/?$rid=1 "{\\"registrationId\\":\\"dev-001\\"}"',
      "set-timer 30000",
      "> connack 0",
      "set-timer 15000",
      "> suback 1",
      "set-timer 30000",
      '> message $dps/registrations/res/202/?$rid=1&retry-after=3 "{\\"operationId\\":\\"4.d0d2e1f1.op-1\\",\\"status\\":\\"assigning\\"}"',
      "clear-timer",
      "status assigning attempt=0 delayMs=3000 httpStatus=202 operationId=4.d0d2e1f1.op-1",
      "set-timer 3000",
      "> timer +3000",
      "status polling attempt=0 operationId=4.d0d2e1f1.op-1",
      'publish $dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.d0d2e1f1.op-1 ""',
      "set-timer 30000",
      `> message $dps/registrations/res/200/?$rid=2 ${JSON.stringify(JSON.stringify(assignedBody))}`,
      "clear-timer",
      "close",
      "status assigned attempt=0 operationId=4.d0d2e1f1.op-1 assignedHub=hub-1.azure-devices.net deviceId=dev-001",
      "done assigned via=register hub=hub-1.azure-devices.net device=dev-001",
    ],
    outcome: "done assigned via=register",
  },
  {
    name: "without pipelining: SUBSCRIBE waits for CONNACK, the register waits for SUBACK",
    config: { pipeline: false },
    steps: [connack(0), suback(1), answer(200, 1, assignedBody)],
    expect: [
      "status connecting attempt=0",
      "connect dps.example:8883 client=dev-001 user=0ne00000001/registrations/dev-001/api-version=2019-03-31 keepalive=60 max-packet=16384 token-expires=+3600s",
      "set-timer 30000",
      "> connack 0",
      "subscribe $dps/registrations/res/# qos=1",
      "set-timer 15000",
      "> suback 1",
      "status registering attempt=0",
      'publish $dps/registrations/PUT/iotdps-register/?$rid=1 "{\\"registrationId\\":\\"dev-001\\"}"',
      "set-timer 30000",
      `> message $dps/registrations/res/200/?$rid=1 ${JSON.stringify(JSON.stringify(assignedBody))}`,
      "clear-timer",
      "close",
      "status assigned attempt=0 assignedHub=hub-1.azure-devices.net deviceId=dev-001",
      "done assigned via=register hub=hub-1.azure-devices.net device=dev-001",
    ],
    outcome: "done assigned via=register",
  },
  {
    name: "custom allocation payload is sent with the register request",
    config: { payload: { modelId: "dtmi:contoso:sensor;1", site: "lab" } },
    steps: [...open, answer(200, 1, assignedBody)],
    expectInOrder: [`${REGISTER}1 "{\\"registrationId\\":\\"dev-001\\",\\"payload\\":{\\"modelId\\":\\"dtmi:contoso:sensor;1\\",\\"site\\":\\"lab\\"}}"`],
    outcome: "done assigned",
  },
  {
    name: "the Embedded C token form: encoded resource, no key name, same flow",
    config: { resourceForm: "encoded" },
    steps: [...open, answer(200, 1, assignedBody)],
    outcome: "done assigned",
  },

  // ---- the troubleshooting table, on the register request --------------------------------------
  ...[400, 405, 409, 412, 415].map(
    (code): Transcript => ({
      name: `${code} on register: terminal, with the DPS error code, tracking id and message; never retried`,
      steps: [...open, answer(code, 1, errorBody(code * 1000 + 1))],
      expectInOrder: ["clear-timer", "close", `status failed attempt=0 httpStatus=${code} errorCode=${code * 1000 + 1} trackingId=trk-${code * 1000 + 1}`],
      expectNever: [`${REGISTER}2`, "set-timer 2500", "retrying"],
      outcome: `done failed DPS_ERROR http=${code} code=${code * 1000 + 1} tracking=trk-${code * 1000 + 1}`,
    }),
  ),
  ...[401, 403, 404].map(
    (code): Transcript => ({
      name: `${code} on register: reconnect with a fresh token and register again, then assigned`,
      steps: [...open, answer(code, 1, errorBody(code * 1000 + 2)), timer(), ...open, answer(200, 2, assignedBody)],
      expectInOrder: [
        `${REGISTER}1`,
        "close",
        `status retrying attempt=1 action=reauthenticate delayMs=2500 httpStatus=${code} errorCode=${code * 1000 + 2}`,
        "set-timer 2500",
        "> timer +2500",
        "connect dps.example:8883",
        `${REGISTER}2`,
        "done assigned",
      ],
      outcome: "done assigned via=register",
    }),
  ),
  {
    name: "401 three times: AUTHENTICATION_FAILED, which says to check the key and the clock (the lifecycle re-checks it slowly)",
    steps: [
      ...open,
      answer(401, 1, errorBody(401002)),
      timer(),
      ...open,
      answer(401, 2, errorBody(401002)),
      timer(),
      ...open,
      answer(401, 3, errorBody(401002)),
    ],
    expectInOrder: ["attempt=1 action=reauthenticate", "attempt=2 action=reauthenticate", "status failed attempt=2 httpStatus=401"],
    expectNever: [`${REGISTER}4`],
    outcome: "done failed AUTHENTICATION_FAILED recheck http=401 code=401002",
  },
  {
    name: "429 on register: waits at least retry-after plus jitter on the same connection, registers again",
    steps: [...open, answer(429, 1, errorBody(429001, "throttled"), { retryAfter: "10" }), timer(), answer(202, 2, assigning, { retryAfter: "1" }), timer(), answer(200, 3, assignedBody)],
    expectInOrder: [
      "status retrying attempt=1 action=retry delayMs=12500 httpStatus=429 errorCode=429001 trackingId=trk-429001",
      "set-timer 12500",
      "> timer +12500",
      `${REGISTER}2`,
      `${POLL}3`,
      "done assigned",
    ],
    expectNever: ["connect dps.example:8883 client=dev-001 user=0ne00000001/registrations/dev-001/api-version=2019-03-31 keepalive=60 max-packet=16384 token-expires=+3585s"],
    outcome: "done assigned via=register",
  },
  {
    name: "429 on a poll: polls the same operation again after the backoff",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "2" }), timer(), answer(429, 2, errorBody(429001), { retryAfter: "5" }), timer(), answer(200, 3, assignedBody)],
    expectInOrder: [`${POLL}2&operationId=4.d0d2e1f1.op-1`, "action=retry delayMs=6250 httpStatus=429", `${POLL}3&operationId=4.d0d2e1f1.op-1`, "done assigned"],
    expectNever: [`${REGISTER}2`, `${REGISTER}3`],
    outcome: "done assigned via=register",
  },
  {
    name: "429 repeated: exponential backoff grows past retry-after, and the budget ends it",
    policy: { budget: { maxAttempts: 4, maxReauthentications: 2, maxLookups: 4 } },
    random: [0],
    steps: [
      ...open,
      answer(429, 1, errorBody(429001), { retryAfter: "1" }),
      timer(),
      answer(429, 2, errorBody(429001), { retryAfter: "1" }),
      timer(),
      answer(429, 3, errorBody(429001), { retryAfter: "1" }),
      timer(),
      answer(429, 4, errorBody(429001), { retryAfter: "1" }),
      timer(),
      answer(429, 5, errorBody(429001), { retryAfter: "1" }),
    ],
    expectInOrder: ["attempt=1 action=retry delayMs=2000", "attempt=2 action=retry delayMs=4000", "attempt=3 action=retry delayMs=8000", "attempt=4 action=retry delayMs=16000", "status failed attempt=5"],
    outcome: "done failed RETRY_BUDGET_EXHAUSTED recheck http=429 code=429001",
  },
  ...[500, 503].map(
    (code): Transcript => ({
      name: `${code} on register: looks the registration up instead of registering blindly; lookup says assigned, so no second register`,
      steps: [...open, answer(code, 1, errorBody(code * 1000 + 1)), timer(), lookupAnswer(200, assignedState)],
      expectInOrder: [
        `status retrying attempt=1 action=recover delayMs=2500 httpStatus=${code}`,
        "> timer +2500",
        "status looking-up attempt=1",
        'lookup POST dps.example:443/0ne00000001/registrations/dev-001?api-version=2021-10-01 {"registrationId":"dev-001"}',
        "set-timer 30000",
        "> lookup-response 200",
        "clear-timer",
        "done assigned via=lookup",
      ],
      expectNever: [`${REGISTER}2`],
      outcome: "done assigned via=lookup",
    }),
  ),
  {
    name: "500 on register, lookup answers 404: the register never arrived, so register again on the open connection",
    steps: [...open, answer(500, 1, errorBody(500001)), timer(), lookupAnswer(404, errorBody(404202), { "x-ms-error-code": "404202" }), answer(200, 2, assignedBody)],
    expectInOrder: ["lookup POST", "> lookup-response 404", `${REGISTER}2`, "done assigned via=register"],
    expectNever: ["status connecting attempt=1"],
    outcome: "done assigned via=register",
  },
  {
    name: "500 on register, the lookup itself fails: retried, then the register is sent again",
    policy: { budget: { maxAttempts: 16, maxReauthentications: 2, maxLookups: 1 } },
    steps: [
      ...open,
      answer(500, 1, errorBody(500001)),
      timer(),
      { event: { kind: "lookup-failed", fault: { kind: "refused", message: "test" } } },
      timer(),
      answer(200, 2, assignedBody),
    ],
    expectInOrder: ["lookup POST", "> lookup-failed refused", "attempt=2 action=retry", "> timer", `${REGISTER}2`, "done assigned"],
    outcome: "done assigned via=register",
  },
  {
    name: "500 on a poll: polls the known operation again after a backoff (no lookup, no register)",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "1" }), timer(), answer(500, 2, errorBody(500001)), timer(), answer(200, 3, assignedBody)],
    expectInOrder: [`${POLL}2`, "action=recover delayMs=2500 httpStatus=500", `${POLL}3`, "done assigned"],
    expectNever: ["lookup POST", `${REGISTER}2`],
    outcome: "done assigned via=register",
  },
  {
    name: "500 with a cached assignment: fall back to the cached hub at once",
    config: { hasCachedAssignment: true },
    steps: [...open, answer(500, 1, errorBody(500001))],
    expectInOrder: ["close", "status fallback attempt=0 action=recover httpStatus=500", "done fallback DPS_ERROR http=500"],
    outcome: "done fallback",
  },
  {
    name: "a 4xx outside the table (418) follows the 4xx row: terminal",
    steps: [...open, answer(418, 1, errorBody(418000))],
    outcome: "done failed DPS_ERROR http=418",
  },
  {
    name: "a policy override turns 409 into a retry",
    policy: { status: { "409": "retry" } },
    steps: [...open, answer(409, 1, errorBody(409001)), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["action=retry", `${REGISTER}2`],
    outcome: "done assigned",
  },

  // ---- CONNACK refusals ---------------------------------------------------------------------------
  ...[1, 2].map(
    (code): Transcript => ({
      name: `CONNACK ${code}: terminal, the firmware or the registration id is wrong`,
      steps: [connack(code)],
      expectInOrder: ["> connack", "close", `status failed attempt=0`],
      outcome: "done failed CONNACK_REFUSED",
    }),
  ),
  {
    name: "CONNACK 3: server unavailable, reconnect after a backoff",
    steps: [connack(3), timer(), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["> connack 3", "close", "status retrying attempt=1 action=retry delayMs=2500 connack=3", "> timer +2500", "connect dps.example", `${REGISTER}2`],
    outcome: "done assigned",
  },
  ...[4, 5].map(
    (code): Transcript => ({
      name: `CONNACK ${code}: reconnect with a fresh token a bounded number of times, then AUTHENTICATION_FAILED`,
      steps: [connack(code), timer(), connack(code), timer(), connack(code)],
      expectInOrder: ["action=reauthenticate", "connect dps.example", "action=reauthenticate", "connect dps.example", "status failed attempt=2"],
      outcome: "done failed AUTHENTICATION_FAILED",
    }),
  ),

  // ---- dropped connections at each step ------------------------------------------------------------
  {
    name: "dropped before CONNACK: the register cannot have arrived, so reconnect and register (no lookup)",
    steps: [closed("closed"), timer(), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["> closed closed", "status retrying attempt=1 action=recover delayMs=2500 fault=closed", "connect dps.example", `${REGISTER}2`],
    expectNever: ["lookup POST"],
    outcome: "done assigned via=register",
  },
  {
    name: "dropped after CONNACK, before SUBACK: the register may be in flight, so look it up",
    steps: [connack(0), closed("closed"), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["> closed closed", "action=recover", "lookup POST"],
    expectNever: [`${REGISTER}2`],
    outcome: "done assigned via=lookup",
  },
  {
    name: "dropped while awaiting the register answer: look it up; lookup says not found; register again",
    steps: [...open, closed("closed"), timer(), lookupAnswer(404, errorBody(404202)), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["> closed closed", "lookup POST", "connect dps.example", `${REGISTER}2`],
    outcome: "done assigned via=register",
  },
  {
    name: "dropped while waiting to poll: reconnect and poll the known operation",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "3" }), closed("closed"), timer(), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["status assigning", "> closed closed", "> timer +3000", "connect dps.example", `${POLL}2&operationId=4.d0d2e1f1.op-1`],
    expectNever: [`${REGISTER}2`, "lookup POST"],
    outcome: "done assigned via=register",
  },
  {
    name: "dropped while awaiting a poll answer: reconnect after a backoff and poll again",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "0" }), timer(), closed("closed"), timer(), ...open, answer(200, 3, assignedBody)],
    expectInOrder: [`${POLL}2`, "> closed closed", "action=recover", "connect dps.example", `${POLL}3`],
    expectNever: [`${REGISTER}2`],
    outcome: "done assigned",
  },
  ...(["dns", "refused", "tls"] as const).map(
    (kind): Transcript => ({
      name: `transport fault "${kind}" before CONNACK: retry the connection with backoff`,
      steps: [closed(kind), timer(), ...open, answer(200, 2, assignedBody)],
      expectInOrder: [`status retrying attempt=1 action=retry delayMs=2500 fault=${kind}`, "connect dps.example"],
      outcome: "done assigned",
    }),
  ),
  {
    name: "a malformed MQTT stream (protocol fault) while awaiting the answer: recover by lookup",
    steps: [...open, closed("protocol"), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["fault=protocol", "lookup POST"],
    outcome: "done assigned via=lookup",
  },

  // ---- timeouts ---------------------------------------------------------------------------------------
  {
    name: "no CONNACK within the connect timeout: close and retry",
    steps: [timer(), timer(), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["> timer +30000", "close", "action=recover", "fault=timeout", "connect dps.example", `${REGISTER}2`],
    outcome: "done assigned",
  },
  {
    name: "no SUBACK within the subscribe timeout: close and recover",
    steps: [connack(0), timer(), timer(), lookupAnswer(404, errorBody(404202)), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["> timer +15000", "close", "fault=timeout", "lookup POST", `${REGISTER}2`],
    outcome: "done assigned",
  },
  {
    name: "no answer to the register within the response timeout: close, then look it up",
    steps: [...open, timer(), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["> timer +30000", "close", "fault=timeout", "lookup POST"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "no answer to the lookup within its timeout: cancel it and try again",
    policy: { budget: { maxAttempts: 16, maxReauthentications: 2, maxLookups: 2 } },
    steps: [...open, answer(500, 1, errorBody(500001)), timer(), timer(), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["lookup POST", "cancel-lookup", "fault=timeout", "lookup POST"],
    outcome: "done assigned via=lookup",
  },

  // ---- malformed answers ------------------------------------------------------------------------------
  {
    name: "a non-JSON body on a 202: treated as a server fault; look the registration up",
    steps: [...open, answer(202, 1, "<html>oops</html>"), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["action=recover", "fault=malformed", "lookup POST"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "a 202 without an operationId: malformed, recover",
    steps: [...open, answer(202, 1, { status: "assigning" }), timer(), lookupAnswer(404, errorBody(404202)), answer(200, 2, assignedBody)],
    expectInOrder: ["fault=malformed", "lookup POST", `${REGISTER}2`],
    outcome: "done assigned",
  },
  {
    name: "an unknown status in the body: malformed, recover",
    steps: [...open, answer(202, 1, { operationId: "x", status: "teleporting" }), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["fault=malformed"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "wrong types in the registration state (assignedHub a number): malformed, recover",
    steps: [...open, answer(200, 1, { operationId: "x", status: "assigned", registrationState: { ...assignedState, assignedHub: 42 } }), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["fault=malformed"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "a non-JSON body on a 500 still counts as a 500",
    steps: [...open, answer(500, 1, "Internal Server Error"), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["action=recover delayMs=2500 httpStatus=500"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "a 200 with status failed: REGISTRATION_FAILED with the error code (an operator can fix it: re-checked)",
    steps: [...open, answer(200, 1, { operationId: "x", status: "failed", registrationState: { registrationId: "dev-001", status: "failed", errorCode: 400207, errorMessage: "Custom allocation failed" } })],
    outcome: "done failed REGISTRATION_FAILED recheck http=200 code=400207",
  },
  {
    name: "a 200 with status disabled: terminal REGISTRATION_FAILED",
    steps: [...open, answer(200, 1, { operationId: "x", status: "disabled", registrationState: { registrationId: "dev-001", status: "disabled" } })],
    outcome: "done failed REGISTRATION_FAILED",
  },
  {
    name: "an answer with another $rid is ignored; the real one is used",
    steps: [...open, answer(200, 99, assignedBody), answer(200, "1a", assignedBody), answer(202, 1, assigning, { retryAfter: "1" }), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["> message $dps/registrations/res/200/?$rid=99", "> message $dps/registrations/res/200/?$rid=1a", "> message $dps/registrations/res/202/?$rid=1", "status assigning"],
    outcome: "done assigned",
  },
  {
    name: "a message on another topic is ignored",
    steps: [...open, { event: { kind: "message", topic: "devices/x/messages/devicebound/", payload: new Uint8Array([1, 2]) } }, answer(200, 1, assignedBody)],
    outcome: "done assigned",
  },

  // ---- retry-after --------------------------------------------------------------------------------
  {
    name: "retry-after before $rid in the topic is read all the same",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "7", retryFirst: true }), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["delayMs=7000", "set-timer 7000", "> timer +7000"],
    outcome: "done assigned",
  },
  {
    name: "retry-after absent on a 202: poll after the default 3 s",
    steps: [...open, answer(202, 1, assigning), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["status assigning attempt=0 delayMs=3000", "set-timer 3000"],
    outcome: "done assigned",
  },
  {
    name: "retry-after 0 on a 202: poll at once",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "0" }), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["status assigning attempt=0 delayMs=0", "set-timer 0", "> timer +0", `${POLL}2`],
    outcome: "done assigned",
  },
  {
    name: "retry-after huge on a 202: clamped to the poll maximum (60 s); the connection is not held that long",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "86400" }), timer(), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["close", "delayMs=60000", "set-timer 60000", "connect dps.example", `${POLL}2`],
    outcome: "done assigned",
  },
  {
    name: "retry-after garbage on a 202: the default poll interval, and the status says why",
    steps: [...open, answer(202, 1, assigning, { retryAfter: "soon" }), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["status assigning attempt=0 delayMs=3000", "set-timer 3000"],
    outcome: "done assigned",
  },
  {
    name: "retry-after huge on a 429: clamped to 10 minutes (plus jitter); the idle connection is closed meanwhile",
    steps: [...open, answer(429, 1, errorBody(429001), { retryAfter: "999999999" }), timer(), ...open, answer(200, 2, assignedBody)],
    expectInOrder: ["close", "action=retry delayMs=750000", "set-timer 750000", "> timer +750000", "connect dps.example"],
    outcome: "done assigned",
  },
  {
    name: "retry-after garbage on a 429: exponential backoff alone",
    steps: [...open, answer(429, 1, errorBody(429001), { retryAfter: "-5" }), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["action=retry delayMs=2500"],
    outcome: "done assigned",
  },
  {
    name: "retry-after 0 on a 429: still backs off (never an immediate retry storm)",
    steps: [...open, answer(429, 1, errorBody(429001), { retryAfter: "0" }), timer(), answer(200, 2, assignedBody)],
    expectInOrder: ["action=retry delayMs=2500"],
    outcome: "done assigned",
  },
  {
    name: "an unreadable 503 with retry-after 30: the retry waits for it",
    steps: [...open, answer(503, 1, "<html>Service Unavailable</html>", { retryAfter: "30" }), timer(), lookupAnswer(404, errorBody(404202)), connack(0), suback(1), answer(200, 2, assignedBody)],
    // 30 s and the jitter draw of 0.5 × 50 %: 37.5 s.
    expectInOrder: ["action=recover delayMs=37500 httpStatus=503", "set-timer 37500"],
    outcome: "done assigned",
  },
  {
    name: "an unreadable 202 with retry-after 20: recovered after it, not after the plain backoff",
    steps: [...open, answer(202, 1, "{not json", { retryAfter: "20" }), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["action=recover delayMs=25000 fault=malformed", "status looking-up"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "a status DPS does not use (201) keeps its retry-after",
    steps: [...open, answer(201, 1, assigning, { retryAfter: "12" }), timer(), lookupAnswer(200, assignedState)],
    expectInOrder: ["action=recover delayMs=15000 fault=malformed"],
    outcome: "done assigned via=lookup",
  },
  {
    name: "a retry-after of 16 digits is clamped to retryAfter.maxMs (10 min), not ignored",
    steps: [...open, answer(429, 1, errorBody(429001), { retryAfter: "9999999999999999" }), timer(), connack(0), suback(1), answer(200, 2, assignedBody)],
    expectInOrder: ["action=retry delayMs=750000"],
    outcome: "done assigned",
  },

  // ---- the rest ---------------------------------------------------------------------------------------
  {
    name: "still assigning after the poll budget: RETRY_BUDGET_EXHAUSTED",
    policy: { poll: { maxPolls: 2, defaultMs: 3000, minMs: 0, maxMs: 60000 } },
    steps: [...open, answer(202, 1, assigning, { retryAfter: "1" }), timer(), answer(202, 2, assigning, { retryAfter: "1" }), timer(), answer(202, 3, assigning, { retryAfter: "1" })],
    outcome: "done failed RETRY_BUDGET_EXHAUSTED",
  },
  {
    name: "a clock before 2020: no token is signed; CLOCK_NOT_SET says to set the clock",
    startAt: 1_000_000_000_000,
    steps: [],
    expect: ["status failed attempt=0", "done failed CLOCK_NOT_SET recheck"],
    outcome: "done failed CLOCK_NOT_SET recheck",
  },
  {
    name: "one attempt only (the lifecycle's long tail): the first failure ends the run, to be re-checked",
    config: { maxAttempts: 0, maxReauthentications: 0 },
    steps: [...open, answer(429, 1, errorBody(429001), { retryAfter: "5" })],
    expectNever: ["set-timer 5000"],
    outcome: "done failed RETRY_BUDGET_EXHAUSTED recheck",
  },
  {
    name: "a 401 with no fresh-token registrations left: AUTHENTICATION_FAILED, to be re-checked slowly",
    config: { maxReauthentications: 0 },
    steps: [...open, answer(401, 1, errorBody(401002))],
    outcome: "done failed AUTHENTICATION_FAILED recheck http=401 code=401002 tracking=trk-401002",
  },
  {
    name: "a lookup naming the hub that has just refused the device is not trusted: register instead",
    config: { distrustHub: "hub-1.azure-devices.net" },
    steps: [...open, answer(503, 1, errorBody(503001)), timer(), lookupAnswer(200, assignedState), answer(200, 2, assignedBody)],
    expectInOrder: ["lookup POST", "> lookup-response 200", `${REGISTER}2`, "done assigned via=register"],
    outcome: "done assigned via=register",
  },
  {
    name: "a certificate signing request: sent with the register under API 2025-07-01-preview; the issued chain comes back in the registration state",
    config: { certificateSigningRequest: "MIIBCSRBASE64+/Q==" },
    steps: [...open, answer(200, 1, { ...assignedBody, registrationState: { ...assignedState, issuedCertificateChain: ["MIIBLEAFCERTIFICATE=", "MIIBISSUINGCA+/Q=="] } })],
    expectInOrder: ["user=0ne00000001/registrations/dev-001/api-version=2025-07-01-preview", 'iotdps-register/?$rid=1 "{\\"registrationId\\":\\"dev-001\\",\\"csr\\":\\"MIIBCSRBASE64+/Q==\\"}"', "done assigned via=register hub=hub-1.azure-devices.net device=dev-001 issued-chain=2"],
    outcome: "done assigned via=register",
  },
  {
    name: "an issued chain that is not an array of base64 certificates: a malformed answer, retried like any other",
    config: { certificateSigningRequest: "MIIBCSRBASE64+/Q==" },
    steps: [...open, answer(200, 1, { ...assignedBody, registrationState: { ...assignedState, issuedCertificateChain: [{ toString: 1 }] } })],
    expectInOrder: ["> message $dps/registrations/res/200/?$rid=1", "status retrying attempt=1 action=recover"],
    outcome: "set-timer",
  },
  {
    name: "an answer over maxAnswerBytes that the host skipped (oversize, the link still up): the same final OVERSIZE",
    config: { maxAnswerBytes: 4096 },
    steps: [...open, { event: { kind: "message", topic: "$dps/registrations/res/200/?$rid=1", payload: new Uint8Array(0), oversize: 70_000 } }],
    expectInOrder: ["max-packet=4096", '> message $dps/registrations/res/200/?$rid=1 ""', "close", "status failed"],
    expectNever: ["set-timer 2500"],
    outcome: "done failed OVERSIZE",
  },
  {
    name: "an answer over maxAnswerBytes: a configuration error that names the setting, not retried",
    config: { maxAnswerBytes: 4096 },
    steps: [connack(0), closed("oversize")],
    expectInOrder: ["max-packet=4096", "> closed oversize", "status failed"],
    expectNever: ["set-timer 2500"],
    outcome: "done failed OVERSIZE",
  },
  {
    name: "stop while waiting to poll: closes, clears the timer, reports stopped",
    steps: [...open, answer(202, 1, assigning), { event: { kind: "stop" } }],
    expectInOrder: ["> stop", "clear-timer", "status stopped", "done stopped"],
    outcome: "done stopped",
  },
  {
    name: "a timer event with no timer set is the host's bug: ILLEGAL_EVENT",
    steps: [...open, answer(200, 1, assignedBody), { event: { kind: "timer" } }],
    outcome: "error ILLEGAL_EVENT",
  },
];
