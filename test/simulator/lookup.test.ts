// The HTTPS Device Registration Status Lookup: state, errors with x-ms-error-code, faults.
import test from "ava";
import { request } from "node:https";
import { dpsToken, keyFor, provision, withEmulator } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

function lookup(registrationId: string, options: { key?: string; method?: string; body?: string; contentType?: string; path?: string; token?: string } = {}): Promise<Reply> {
  const body = options.body ?? JSON.stringify({ registrationId });
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: em.endpoints.https.port,
        method: options.method ?? "POST",
        path: options.path ?? `/${em.idScope}/registrations/${registrationId}?api-version=2021-10-01`,
        ca: em.caPem,
        headers: {
          "content-type": options.contentType ?? "application/json",
          authorization: options.token ?? dpsToken(registrationId, options.key ?? keyFor(registrationId), { idScope: em.idScope, encoded: true }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

test("lookup: a registered device gets its registration state (200)", async (t) => {
  em.addIndividualEnrollment({ registrationId: "look-ok", primaryKey: keyFor("look-ok") });
  await provision(em, "look-ok", keyFor("look-ok"));
  const reply = await lookup("look-ok");
  t.is(reply.status, 200);
  t.like(reply.json, { registrationId: "look-ok", status: "assigned", deviceId: "look-ok", substatus: "initialAssignment" });
  t.truthy(reply.json.assignedHub);
  t.is(reply.headers["x-ms-error-code"], undefined);
});

test("lookup: an enrolled device that never registered gets 404 with x-ms-error-code", async (t) => {
  em.addIndividualEnrollment({ registrationId: "look-new", primaryKey: keyFor("look-new") });
  const reply = await lookup("look-new");
  t.is(reply.status, 404);
  t.is(reply.json.errorCode, 404202);
  t.is(reply.headers["x-ms-error-code"], "404202");
  const unknown = await lookup("look-nobody");
  t.is(unknown.status, 404);
  t.is(unknown.headers["x-ms-error-code"], "404201");
});

test("lookup: a wrong key or a missing token gets 401 with 401002", async (t) => {
  em.addIndividualEnrollment({ registrationId: "look-auth", primaryKey: keyFor("look-auth") });
  const reply = await lookup("look-auth", { key: keyFor("not-it") });
  t.is(reply.status, 401);
  t.is(reply.json.errorCode, 401002);
  t.is(reply.headers["x-ms-error-code"], "401002");
  t.is((await lookup("look-auth", { token: "" })).status, 401);
});

test("lookup: wrong method 405, wrong content type 415, bad body 400, no api-version 400", async (t) => {
  em.addIndividualEnrollment({ registrationId: "look-bad", primaryKey: keyFor("look-bad") });
  t.is((await lookup("look-bad", { method: "PUT" })).status, 405);
  t.is((await lookup("look-bad", { contentType: "text/plain" })).status, 415);
  t.is((await lookup("look-bad", { body: "{oops" })).status, 400);
  t.is((await lookup("look-bad", { body: JSON.stringify({ registrationId: "other" }) })).status, 400);
  t.is((await lookup("look-bad", { path: `/${em.idScope}/registrations/look-bad` })).status, 400);
  t.is((await lookup("look-bad", { path: "/elsewhere" })).status, 404);
  t.true((em.counters().https["400"] ?? 0) >= 3);
});

test("lookup: faults inject statuses with retry-after, malformed bodies, delays and drops", async (t) => {
  em.addIndividualEnrollment({ registrationId: "look-fault", primaryKey: keyFor("look-fault") });
  em.addFault({ step: "lookup", registrationId: "look-fault", status: 503, retryAfter: 7, times: 1 });
  const unavailable = await lookup("look-fault");
  t.is(unavailable.status, 503);
  t.is(unavailable.headers["retry-after"], "7");
  t.is(unavailable.headers["x-ms-error-code"], "503001");
  em.addFault({ step: "lookup", registrationId: "look-fault", malformed: "non-json", times: 1 });
  const garbled = await lookup("look-fault");
  t.is(garbled.status, 404);
  t.is(garbled.json, undefined);
  em.addFault({ step: "lookup", registrationId: "look-fault", delayMs: 100, status: 429, times: 1 });
  const throttled = await lookup("look-fault");
  t.is(throttled.status, 429);
  t.is(throttled.json.errorCode, 429001);
  em.addFault({ step: "lookup", registrationId: "look-fault", drop: true, times: 1 });
  await t.throwsAsync(lookup("look-fault"), { message: /socket hang up|ECONNRESET/ });
});
