/**
 * `shuru start`'s half: launches the supervisor as a detached process (its own session via
 * `setsid`, stdin from /dev/null, stdout and stderr appended to its log) and waits until its
 * registry record says `running` — or the supervisor exits, in which case its log says why.
 *
 * @module
 */

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

/**
 * The environment variable that carries `--secret` values to the supervisor (its environment
 * is readable only by the same user, unlike its command line). The supervisor removes it.
 */
export const SECRETS_ENV = "SHURU_SUPERVISOR_SECRETS";

function withoutSecrets(spec: SuperviseSpec): SuperviseSpec {
  if (!spec.network?.secrets) return spec;
  const { secrets: _, ...network } = spec.network;
  return { ...spec, network };
}

/**
 * Puts the secrets a supervisor received through {@linkcode SECRETS_ENV} (its text, or
 * undefined) back into its spec.
 */
export function withSecretsFrom(spec: SuperviseSpec, text: string | undefined): SuperviseSpec {
  if (text === undefined || !spec.network) return spec;
  const secrets = JSON.parse(text);
  if (!Array.isArray(secrets)) throw new TypeError("Cannot read the supervisor's secrets");
  return { ...spec, network: { ...spec.network, secrets } };
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
  // util-linux setsid (Debian: always installed) calls setsid(2) and execs in place.
  const setsid = { program: "setsid", prefix: [] as string[] };
  const [program, ...rest] = options.shuru;
  // sh redirects and execs setsid, which calls setsid(2) and execs the supervisor: one pid.
  const child = new Deno.Command("/bin/sh", {
    args: [
      "-c",
      'log="$1"; shift; exec "$@" </dev/null >>"$log" 2>&1',
      "sh",
      log,
      setsid.program,
      ...setsid.prefix,
      program!,
      ...rest,
      "_supervise",
      encodeSpec(withoutSecrets(spec)),
    ],
    // Secret values never go on a command line (ps shows those to every user).
    ...(spec.network?.secrets?.length
      ? { env: { [SECRETS_ENV]: JSON.stringify(spec.network.secrets) } }
      : {}),
    // A daemon keeps no folder busy (every path in the spec is absolute).
    cwd: "/",
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
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
    // The supervisor outlives us; do not keep this process alive for it.
    child.unref();
  }
}
