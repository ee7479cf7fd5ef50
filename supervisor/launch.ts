/**
 * `shuru start`'s half: launches the supervisor as a detached process (stdout and stderr appended
 * to its log; it makes itself a session of its own at once, {@linkcode detachFromTerminal}) and
 * waits until its registry record says `running` — or the supervisor exits, in which case its
 * log says why.
 *
 * `--secret` values reach the supervisor through its stdin, a pipe this process writes once and
 * closes: never its command line (every user's `ps` shows it) nor its environment (kept in
 * `/proc/PID/environ` for the process's life, whatever it unsets later). The supervisor's
 * environment is ours without any variable that holds a value (`NAME@HOSTS` takes one from
 * there).
 *
 * @module
 */

import { libc } from "../ffi/mod.ts";
import { concatBytes } from "../io/mod.ts";
import { SupervisorError } from "./errors.ts";
import { logPath, readRecord, type SandboxRecord } from "./registry.ts";
import { encodeSpec, type SuperviseSpec } from "./supervise.ts";

/** Options of {@linkcode launchSupervisor}. */
export interface LaunchSupervisorOptions {
  /** The command that runs the shuru CLI (the supervisor is its hidden `_supervise`). */
  shuru: string[];
  /** Milliseconds to wait for the agent. @default 300000 */
  timeoutMs?: number;
  /** Polling interval in milliseconds. @default 100 */
  pollMs?: number;
}

/** Most bytes of secrets a supervisor reads from its stdin. */
const MAX_SECRETS_BYTES = 1024 * 1024;
/** How long a supervisor waits for its stdin to close. */
const SECRETS_READ_MS = 30_000;

function withoutSecrets(spec: SuperviseSpec): SuperviseSpec {
  if (!spec.network?.secrets) return spec;
  const { secrets: _, ...network } = spec.network;
  return { ...spec, network };
}

/**
 * Puts the secrets a supervisor received through {@linkcode readHandedSecrets} (their text, or
 * undefined) back into its spec.
 */
export function withSecretsFrom(spec: SuperviseSpec, text: string | undefined): SuperviseSpec {
  if (text === undefined || !spec.network) return spec;
  const secrets = JSON.parse(text);
  if (!Array.isArray(secrets)) throw new TypeError("Cannot read the supervisor's secrets");
  return { ...spec, network: { ...spec.network, secrets } };
}

/**
 * Makes this process (the supervisor) the leader of a new session without a terminal, so no
 * hang-up or Ctrl-C of the terminal `shuru start` ran in reaches it. Nothing changes when it
 * already leads a process group (`_supervise` run by hand from an interactive shell).
 */
export function detachFromTerminal(): void {
  try {
    libc.setsid();
  } catch (err) {
    if (!(err instanceof libc.LibcError && err.errno === libc.ERRNO.EPERM)) throw err;
  }
}

/**
 * The supervisor's side of the hand-off: everything on its stdin until the launcher closes it
 * (undefined when empty or a terminal, as when `_supervise` is run by hand).
 *
 * @throws {SupervisorError} `start_failed` when stdin stays open or holds too much.
 */
export async function readHandedSecrets(
  stdin: { readable: ReadableStream<Uint8Array>; isTerminal(): boolean } = Deno.stdin,
): Promise<string | undefined> {
  if (stdin.isTerminal()) return undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stdin.readable.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new SupervisorError("start_failed", "Cannot read the secrets: stdin stayed open")),
      SECRETS_READ_MS,
    );
  });
  try {
    for (;;) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) break;
      size += value.length;
      if (size > MAX_SECRETS_BYTES) {
        throw new SupervisorError("start_failed", "Cannot read the secrets: more than 1 MiB");
      }
      chunks.push(value);
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  if (size === 0) return undefined;
  return new TextDecoder().decode(concatBytes(chunks));
}

/** Our environment without the variables whose value contains one of `values`. */
function environmentWithout(values: readonly string[]): Record<string, string> {
  const env = Deno.env.toObject();
  for (const [name, text] of Object.entries(env)) {
    if (values.some((v) => text.includes(v))) delete env[name];
  }
  return env;
}

/** How many bytes of the log a failed start shows. */
const LOG_TAIL_BYTES = 4096;

async function logTail(path: string): Promise<string> {
  try {
    const text = await Deno.readTextFile(path);
    return text.slice(-LOG_TAIL_BYTES).trim();
  } catch {
    return "";
  }
}

/**
 * Starts a supervisor for `spec` and resolves with its record once the sandbox runs.
 *
 * @throws {SupervisorError} `start_failed` with the supervisor's log when it exits first or
 *   does not get ready in time.
 */
export async function launchSupervisor(
  spec: SuperviseSpec,
  options: LaunchSupervisorOptions,
): Promise<SandboxRecord> {
  const dir = spec.home.sandboxes;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const log = logPath(dir, spec.name);
  await Deno.writeTextFile(log, "", { mode: 0o600 });
  const [program, ...rest] = options.shuru;
  // sh redirects and execs the supervisor: one pid, which then calls setsid(2) itself (macOS has
  // no setsid command).
  const secrets = spec.network?.secrets ?? [];
  const child = new Deno.Command("/bin/sh", {
    args: [
      "-c",
      'log="$1"; shift; exec "$@" >>"$log" 2>&1',
      "sh",
      log,
      program!,
      ...rest,
      "_supervise",
      encodeSpec(withoutSecrets(spec)),
    ],
    // No value in the environment either: it stays in /proc/PID/environ whatever is unset.
    clearEnv: true,
    env: environmentWithout(secrets.map((s) => s.value)),
    // A daemon keeps no folder busy (every path in the spec is absolute).
    cwd: "/",
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // The values go through the pipe (empty without secrets), which closes: stdin is then at EOF.
  const handing = (async () => {
    const writer = child.stdin.getWriter();
    try {
      if (secrets.length > 0) await writer.write(new TextEncoder().encode(JSON.stringify(secrets)));
      await writer.close();
    } catch {
      // The supervisor exited first; its log says why, and the loop below reports it.
    }
  })();
  let exited: Deno.CommandStatus | undefined;
  void child.status.then((s) => (exited = s));
  const deadline = Date.now() + (options.timeoutMs ?? 300_000);
  try {
    while (true) {
      const record = await readRecord(dir, spec.name);
      if (record && record.supervisor.pid === child.pid) {
        if (record.state === "running") return record;
        if (record.state === "stopping") break;
      }
      if (exited) break;
      if (Date.now() > deadline) {
        try {
          Deno.kill(child.pid, "SIGTERM");
        } catch { /* gone */ }
        const tail = await logTail(log);
        throw new SupervisorError(
          "start_failed",
          `Cannot start sandbox ${spec.name}: not ready after ${
            Math.round((options.timeoutMs ?? 300_000) / 1000)
          } s; stopped it. Its log:\n${tail}`,
        );
      }
      await new Promise((r) => setTimeout(r, options.pollMs ?? 100));
    }
    await child.status;
    const tail = await logTail(log);
    await Deno.remove(log).catch(() => {});
    throw new SupervisorError(
      "start_failed",
      `Cannot start sandbox ${spec.name}: its supervisor exited (code ${exited?.code}):\n${
        tail || "(no log)"
      }`,
    );
  } finally {
    await handing;
    // The supervisor outlives us; do not keep this process alive for it.
    child.unref();
  }
}
