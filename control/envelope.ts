/**
 * The JSON-RPC 2.0 envelope of one incoming line, checked before anything runs: a request
 * (with an id, answered), a notification (no id, never answered), `$/cancel`, a line to answer
 * with an error, or a line to drop (a client's response: we never send requests). Pure: no I/O,
 * no handlers.
 *
 * @module
 */

import { RpcError } from "./errors.ts";
import { RpcErrorCode } from "./wire.ts";

/** A JSON-RPC id. */
export type RpcId = string | number | null;

/** What one line is. */
export type Envelope =
  | { kind: "request"; id: RpcId; method: string; params: unknown }
  | { kind: "notification"; method: string; params: unknown }
  | { kind: "cancel"; id: RpcId | undefined; params: unknown }
  | { kind: "error"; id: RpcId; error: RpcError }
  | { kind: "ignore" };

function invalid(id: RpcId, message: string): Envelope {
  return {
    kind: "error",
    id,
    error: new RpcError(RpcErrorCode.INVALID_REQUEST, "EINVAL", message),
  };
}

/** Reads the envelope of one line of text. */
export function readEnvelope(text: string): Envelope {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    return {
      kind: "error",
      id: null,
      error: new RpcError(
        RpcErrorCode.PARSE_ERROR,
        "EINVAL",
        `Cannot parse the message: ${err instanceof Error ? err.message : err}`,
      ),
    };
  }
  if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
    return invalid(
      null,
      "Cannot handle the message: expected one JSON-RPC request object (batches are not supported)",
    );
  }
  const m = msg as Record<string, unknown>;
  const hasId = "id" in m;
  const id = m.id;
  if (hasId && !(typeof id === "string" || typeof id === "number" || id === null)) {
    return invalid(null, "Cannot handle the message: bad id");
  }
  const rid = (hasId ? id : null) as RpcId;
  if (typeof m.method !== "string") {
    // A response from the client: we never send requests, so there is nothing to match.
    if ("result" in m || "error" in m) return { kind: "ignore" };
    return invalid(rid, "Cannot handle the message: no method");
  }
  if (m.jsonrpc !== "2.0") {
    return hasId
      ? invalid(rid, 'Cannot handle the message: "jsonrpc" must be "2.0"')
      : { kind: "ignore" };
  }
  if (m.method === "$/cancel") {
    return { kind: "cancel", id: hasId ? rid : undefined, params: m.params };
  }
  return hasId
    ? { kind: "request", id: rid, method: m.method, params: m.params }
    : { kind: "notification", method: m.method, params: m.params };
}
