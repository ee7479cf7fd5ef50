/**
 * A process started with `Sandbox.spawn`: stdout/stderr as `ReadableStream<Uint8Array>` fed by
 * `output` notifications, stdin as a `WritableStream` sending `input` requests.
 *
 * @module
 */

import type { ControlClient } from "../control/mod.ts";
import { sdkRequest } from "./errors.ts";

/** How a process ended. */
export interface ProcessStatus {
  /** Exit code (128+N when killed by signal N). */
  exitCode: number;
  /** True when the exit code is 0. */
  success: boolean;
  /** Name of the signal that killed it, or null. */
  signal: string | null;
}

/** Bytes of unread output kept per stream before the stream errors (read your output). */
export const MAX_UNREAD_OUTPUT_BYTES = 64 * 1024 * 1024;

/** A running process in a sandbox. */
export class SandboxProcess {
  /** Protocol pid ("p3"). */
  readonly pid: string;
  /** Standard output (the terminal with `tty`). */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Standard error (empty with `tty`). */
  readonly stderr: ReadableStream<Uint8Array>;
  /** Standard input; `close()` sends EOF. */
  readonly stdin: WritableStream<Uint8Array>;
  /** Resolves when the process has exited and its output has been delivered. */
  readonly status: Promise<ProcessStatus>;
  readonly #client: ControlClient;
  #resolveStatus!: (s: ProcessStatus) => void;
  #rejectStatus!: (e: unknown) => void;
  readonly #controllers: Record<"stdout" | "stderr", ReadableStreamDefaultController<Uint8Array>>;
  readonly #unread = { stdout: 0, stderr: 0 };
  #lastSeq = 0;

  /** @internal Use `Sandbox.spawn`. */
  constructor(client: ControlClient, pid: string) {
    this.#client = client;
    this.pid = pid;
    const controllers: Partial<
      Record<"stdout" | "stderr", ReadableStreamDefaultController<Uint8Array>>
    > = {};
    const make = (name: "stdout" | "stderr") =>
      new ReadableStream<Uint8Array>({
        start: (c) => {
          controllers[name] = c;
        },
        pull: () => {
          this.#unread[name] = 0;
        },
      }, { highWaterMark: 0 });
    this.stdout = make("stdout");
    this.stderr = make("stderr");
    this.#controllers = controllers as Record<
      "stdout" | "stderr",
      ReadableStreamDefaultController<Uint8Array>
    >;
    this.status = new Promise((resolve, reject) => {
      this.#resolveStatus = resolve;
      this.#rejectStatus = reject;
    });
    this.status.catch(() => {});
    this.stdin = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        // Large writes go in pieces the server accepts.
        for (let o = 0; o < chunk.length || o === 0; o += 1024 * 1024) {
          const piece = chunk.subarray(o, o + 1024 * 1024);
          await this.#call("input", { pid, data: piece });
          if (chunk.length === 0) break;
        }
      },
      close: () => this.#call("close_stdin", { pid }).then(() => {}),
    });
  }

  /** Last output seq delivered (for `attach` after a reconnect). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** @internal An `output` notification for this pid. */
  deliver(stream: "stdout" | "stderr", data: Uint8Array, seq: number): void {
    if (seq <= this.#lastSeq) return;
    this.#lastSeq = seq;
    const c = this.#controllers[stream];
    this.#unread[stream] += data.length;
    try {
      if (this.#unread[stream] > MAX_UNREAD_OUTPUT_BYTES) {
        c.error(
          new RangeError(
            `Cannot buffer more ${stream} of process ${this.pid}: over ${MAX_UNREAD_OUTPUT_BYTES} bytes unread`,
          ),
        );
        return;
      }
      c.enqueue(data);
    } catch {
      // The reader cancelled the stream: drop its output.
    }
  }

  /** @internal The `exit` notification (after all output). */
  finish(code: number, signal: string | null): void {
    for (const c of Object.values(this.#controllers)) {
      try {
        c.close();
      } catch { /* cancelled or errored */ }
    }
    this.#resolveStatus({ exitCode: code, success: code === 0, signal });
  }

  /** @internal The connection closed before the exit. */
  fail(err: unknown): void {
    for (const c of Object.values(this.#controllers)) {
      try {
        c.error(err);
      } catch { /* already closed */ }
    }
    this.#rejectStatus(err);
  }

  /** Waits for the exit. */
  wait(): Promise<ProcessStatus> {
    return this.status;
  }

  /** Sends a signal to the process group (default SIGTERM). */
  async kill(signal = "SIGTERM"): Promise<void> {
    await this.#call("kill", { pid: this.pid, signal });
  }

  /** Resizes its terminal (spawned with `tty`). */
  async resize(rows: number, cols: number): Promise<void> {
    await this.#call("resize", { pid: this.pid, rows, cols });
  }

  /** Reads stdout and stderr to the end and waits for the exit. */
  async output(): Promise<ProcessStatus & { stdout: Uint8Array; stderr: Uint8Array }> {
    const [stdout, stderr, status] = await Promise.all([
      new Response(this.stdout).bytes(),
      new Response(this.stderr).bytes(),
      this.status,
    ]);
    return { ...status, stdout, stderr };
  }

  #call(method: string, params: Record<string, unknown>): Promise<unknown> {
    return sdkRequest(this.#client, method, { params });
  }
}
