// Loads the official Azure IoT Node clients (CommonJS) for the interop tests, and the MQTT base
// that the provisioning transport itself depends on: its `setOptions({ ca })` is how the
// provisioning client trusts the emulator's CA without NODE_EXTRA_CA_CERTS.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

export const provisioning = require("azure-iot-provisioning-device") as typeof import("azure-iot-provisioning-device");
export const provisioningMqtt = require("azure-iot-provisioning-device-mqtt") as typeof import("azure-iot-provisioning-device-mqtt");
export const symmetricKey = require("azure-iot-security-symmetric-key") as typeof import("azure-iot-security-symmetric-key");
export const x509Security = require("azure-iot-security-x509") as typeof import("azure-iot-security-x509");
export const device = require("azure-iot-device") as typeof import("azure-iot-device");
export const deviceMqtt = require("azure-iot-device-mqtt") as typeof import("azure-iot-device-mqtt");

// The transport's own copy (npm may nest it under the transport package), not whichever is hoisted.
const transportRequire = createRequire(require.resolve("azure-iot-provisioning-device-mqtt"));
const mqttBase = transportRequire("azure-iot-mqtt-base") as { MqttBase: new () => { setOptions(options: { ca: string }): void } };

/** A provisioning MQTT transport that trusts `caPem`. */
export function provisioningTransport(caPem: string): InstanceType<typeof provisioningMqtt.Mqtt> {
  const base = new mqttBase.MqttBase();
  base.setOptions({ ca: caPem });
  return new provisioningMqtt.Mqtt(base as never);
}

/** Registers through the official client; resolves with the registration state it reports. */
export async function officialRegister(dpsHostPort: string, idScope: string, registrationId: string, key: string, caPem: string, payload?: object): Promise<any> {
  const security = new symmetricKey.SymmetricKeySecurityClient(registrationId, key);
  const client = provisioning.ProvisioningDeviceClient.create(dpsHostPort, idScope, provisioningTransport(caPem), security as never);
  if (payload) client.setProvisioningPayload(payload);
  return await (client.register() as Promise<unknown>);
}

/** Registers through the official client with X.509 attestation (`cert` may hold the chain after the leaf). */
export async function officialRegisterX509(dpsHostPort: string, idScope: string, registrationId: string, cert: string, key: string, caPem: string): Promise<any> {
  const security = new x509Security.X509Security(registrationId, { cert, key });
  const client = provisioning.ProvisioningDeviceClient.create(dpsHostPort, idScope, provisioningTransport(caPem), security as never);
  return await (client.register() as Promise<unknown>);
}
