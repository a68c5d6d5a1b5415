/**
 * The Moddable host's incoming PUBLISH path on Node: the portable cases of
 * test/support/moddable-mqtt-cases.ts (the XS tier runs the same ones, test/xs/moddable-mqtt.xs.ts).
 */
import test from "ava";
import { moddableMqttCases } from "./support/moddable-mqtt-cases.js";

for (const c of moddableMqttCases) {
  test(`on Node, ${c.name}`, (t) => {
    c.fn();
    t.pass();
  });
}
