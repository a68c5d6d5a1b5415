// Error bodies as DPS writes them, and the emulator's own errors for callers who misuse it.
//
//   {"errorCode":401002,"trackingId":"2cb8f317-10f5-44f4-a5a6-380a998146e9","message":"Unauthorized","timestampUtc":"2019-11-19T21:39:05.1573304Z"}
//
// The six-digit code divided by 1000 is the HTTP status. Codes marked "seen" appear in the real
// service's answers; the others follow the same pattern so that a client that shows them to a
// person gives something to search for.
import type { Random } from "./random.js";

export interface ErrorDescription {
  readonly errorCode: number;
  readonly message: string;
  /** The value of `x-ms-error-code` on HTTPS answers. */
  readonly name: string;
}

const DESCRIPTIONS: Record<number, ErrorDescription> = {
  400: { errorCode: 400004, message: "The request body is not valid: it could not be parsed or validated.", name: "ArgumentInvalid" },
  401: { errorCode: 401002, message: "Unauthorized", name: "IotHubUnauthorizedAccess" }, // seen
  403: { errorCode: 403002, message: "The request is forbidden for this registration.", name: "Forbidden" },
  404: { errorCode: 404201, message: "The enrollment or registration was not found.", name: "DeviceRegistrationNotFound" }, // seen
  405: { errorCode: 405001, message: "The method is not allowed on this resource.", name: "MethodNotAllowed" },
  409: { errorCode: 409001, message: "The request conflicts with the current state of the registration.", name: "Conflict" },
  412: { errorCode: 412001, message: "The ETag in the request does not match the registration's ETag.", name: "PreconditionFailed" },
  415: { errorCode: 415001, message: "The payload format is not supported.", name: "UnsupportedMediaType" },
  429: { errorCode: 429001, message: "Operations are being throttled by the service.", name: "ThrottlingException" }, // seen
  500: { errorCode: 500001, message: "An internal error occurred.", name: "InternalServerError" },
  503: { errorCode: 503001, message: "The service is unavailable. Retry later.", name: "ServiceUnavailable" },
};

/** The statuses a fault rule may inject: the troubleshooting table's codes plus 403 and 503. */
export const INJECTABLE_STATUSES: readonly number[] = [400, 401, 403, 404, 405, 409, 412, 415, 429, 500, 503];

export function describeStatus(status: number): ErrorDescription {
  return DESCRIPTIONS[status] ?? { errorCode: status * 1000, message: `Error ${status}`, name: `Error${status}` };
}

let lastMs = NaN;
let lastText = "";

/** UTC time with the seven fractional digits .NET services write (memoized per millisecond: it is on the hot path). */
export function timestampUtc(nowMs: number): string {
  if (nowMs !== lastMs) {
    const iso = new Date(nowMs).toISOString();
    lastText = iso.slice(0, -1) + "0000Z";
    lastMs = nowMs;
  }
  return lastText;
}

export interface ErrorBody {
  errorCode: number;
  trackingId: string;
  message: string;
  timestampUtc: string;
}

export function errorBody(status: number, random: Random, nowMs: number, errorCode?: number, message?: string): ErrorBody {
  const d = describeStatus(status);
  return {
    errorCode: errorCode ?? d.errorCode,
    trackingId: random.uuid(),
    message: message ?? d.message,
    timestampUtc: timestampUtc(nowMs),
  };
}

/** Thrown to a caller of the programmatic or admin API for a mistake of theirs (bad config, unknown hub). */
export class EmulatorError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "EmulatorError";
    this.code = code;
  }
}

/**
 * An answer of the hub's service side that is not a success (a method to an offline device, a
 * stale etag, a twin patch over the limits), as IoT Hub words it: the HTTP status, the six-digit
 * code and its name (the REST API's `iothub-errorcode` header).
 *
 *   404 404103 DeviceNotOnline    "Timed out waiting for device to connect."
 *   504 504101 GatewayTimeout     "Timed out waiting for the response from device."
 */
export class HubServiceError extends EmulatorError {
  readonly status: number;
  readonly errorCode: number;
  readonly info: Record<string, unknown> | undefined;
  constructor(status: number, errorCode: number, name: string, message: string, info?: Record<string, unknown>) {
    super(name, message);
    this.name = "HubServiceError";
    this.status = status;
    this.errorCode = errorCode;
    this.info = info;
  }
}
