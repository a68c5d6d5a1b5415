// The Moddable host's incoming PUBLISH path on XS: the frame reader with PUBLISHes over its limit
// (whole, byte by byte, split at every boundary, with trailing data) and the MQTT adapter on a
// stand-in socket (onMessage before PUBACK; an oversize PUBLISH as topic, empty payload and size).
// The same cases run on Node in test/moddable-mqtt.test.ts.
import { run, test } from "./harness.js";
import { moddableMqttCases } from "../support/moddable-mqtt-cases.js";

for (const c of moddableMqttCases) test(c.name, c.fn);

await run("moddable-mqtt");
