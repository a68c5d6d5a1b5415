// The body of an HTTP request, bounded: what the emulator's HTTP(S) endpoints (the status lookup,
// the DPS and hub service APIs, the admin API) read before they answer.
import type { IncomingMessage, ServerResponse } from "node:http";

/**
 * Reads the body of `req` and calls `onBody` once it has ended, with its UTF-8 text, or with
 * undefined when it was over `maxBytes` (the bytes past the limit are counted, not kept; past
 * `drainBytes` the request is destroyed, so a client cannot hold the connection with an endless
 * body either). A request that fails destroys the response.
 */
export function readBody(req: IncomingMessage, res: ServerResponse, maxBytes: number, onBody: (text: string | undefined) => void, drainBytes = 16 * maxBytes): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size <= maxBytes) chunks.push(chunk);
    else if (size > drainBytes) req.destroy();
  });
  req.on("error", () => res.destroy());
  req.on("end", () => onBody(size > maxBytes ? undefined : Buffer.concat(chunks).toString("utf8")));
}
