/**
 * Every method of the control protocol and its handler: {@linkcode HANDLERS} is typed by
 * {@linkcode METHODS} (what `initialize` advertises), so a method without a handler, or a
 * handler for a method `initialize` does not list, does not compile. Here too: the sandbox's
 * own methods, `initialize`, `checkpoint` and `shutdown`.
 *
 * @module
 */

import { NAME_LIMITS, nameProblem } from "../host/mod.ts";
import { invalidParams, serverError, toRpcError } from "./errors.ts";
import { FILE_HANDLERS } from "./file_handlers.ts";
import type { HandledMethod, Handler } from "./handler.ts";
import { PROCESS_HANDLERS } from "./process_handlers.ts";
import { CONTROL_PROTOCOL_VERSION, METHODS, NOTIFICATIONS } from "./wire.ts";

const SANDBOX_HANDLERS = {
  initialize(session, p) {
    session.setStopOnClose(p.bool("stop_on_close", false));
    const server = session.server;
    return Promise.resolve({
      result: {
        protocol_version: CONTROL_PROTOCOL_VERSION,
        server: server.serverInfo,
        capabilities: {
          methods: [...METHODS],
          notifications: [...NOTIFICATIONS],
          checkpoint: typeof server.backend.checkpoint === "function",
          shutdown: typeof server.backend.shutdown === "function",
          limits: {
            max_line_bytes: server.limits.MAX_LINE_BYTES,
            max_chunk_bytes: server.limits.MAX_CHUNK_BYTES,
            max_whole_file_bytes: server.limits.MAX_WHOLE_FILE_BYTES,
            ring_bytes: server.limits.RING_BYTES,
            max_output_bytes: server.limits.MAX_OUTPUT_BYTES,
            default_exec_timeout_ms: server.limits.DEFAULT_EXEC_TIMEOUT_MS,
          },
        },
        sandbox: server.backend.info?.() ?? {},
      },
    });
  },

  async checkpoint(session, p) {
    const name = p.string("name", { maxLength: NAME_LIMITS.checkpoint });
    const problem = nameProblem("checkpoint", name);
    if (problem) throw invalidParams(problem);
    const backend = session.server.backend;
    if (!backend.checkpoint) {
      throw serverError(
        "UNSUPPORTED",
        `Cannot save checkpoint ${name}: this sandbox has no disk to save (a bare agent)`,
      );
    }
    const memory = p.bool("memory", false);
    const r = await backend.checkpoint(name, { memory }).catch((err) => {
      throw toRpcError(err, `save checkpoint ${name}`);
    });
    const m = r.saved.memory;
    return {
      result: {
        name,
        pause_ms: Math.round(r.pauseMs * 10) / 10,
        total_ms: Math.round(r.totalMs),
        hashed_blocks: r.saved.hashedBlocks,
        new_chunks: r.saved.newChunks,
        new_bytes: r.saved.newBytes,
        used_blocks: r.saved.usedBlocks,
        ...(m
          ? {
            memory: {
              size: m.size,
              used_blocks: m.usedBlocks,
              new_chunks: m.newChunks,
              state_bytes: m.stateBytes,
            },
          }
          : {}),
      },
    };
  },

  shutdown(session) {
    const server = session.server;
    if (!server.backend.shutdown) {
      throw serverError("UNSUPPORTED", "Cannot shut down: this server does not own the sandbox");
    }
    return Promise.resolve({
      result: {},
      afterReply: () => void server.requestShutdown().catch(() => {}),
    });
  },
} satisfies Partial<Record<HandledMethod, Handler>>;

/** Every method's handler. */
export const HANDLERS: { readonly [M in HandledMethod]: Handler } = {
  ...SANDBOX_HANDLERS,
  ...PROCESS_HANDLERS,
  ...FILE_HANDLERS,
};

/** The handler of `method`, or undefined when the protocol has no such method. */
export function handlerOf(method: string): Handler | undefined {
  return Object.hasOwn(HANDLERS, method) ? HANDLERS[method as HandledMethod] : undefined;
}
