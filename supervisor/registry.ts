/**
 * The registry of named sandboxes: one JSON record per sandbox at `<home>/sandboxes/NAME.json`
 * (`HomeLayout.sandboxes`),
 * written by its supervisor (atomically: temp file + rename) and removed when it stops. The
 * record names the supervisor by pid and start time, so a record whose supervisor is gone (a
 * crash, SIGKILL) is recognised as stale however the pid was reused; `ps`, `start` and `prune`
 * remove stale records. A name is claimed by creating its record with O_EXCL.
 *
 * @module
 */

import { join } from "node:path";
import { processAlive, type ProcessId, selfProcessId } from "../host/mod.ts";
import { SupervisorError } from "./errors.ts";

/** A sandbox's life cycle as its supervisor records it. */
export type SandboxState = "starting" | "running" | "stopping";

/** One registry record. */
export interface SandboxRecord {
  /** Record format version. */
  version: 1;
  /** Sandbox name. */
  name: string;
  /** Life-cycle state. */
  state: SandboxState;
  /** The supervisor process. */
  supervisor: ProcessId;
  /** Instance folder (sockets, console log). */
  instanceDir: string;
  /** Control socket (JSON-RPC, mode 0600). */
  controlSocket: string;
  /** Supervisor log. */
  log: string;
  /** ISO time the supervisor started. */
  startedAt: string;
  /** ISO time the agent answered. */
  readyAt?: string;
  /** Virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Disk size in MiB. */
  diskSizeMiB: number;
  /** The checkpoint it started from, or null for the base image. */
  from: string | null;
  /** The OCI image its disk descends from (`--image`, or its checkpoint's), if any. */
  image?: string | null;
  /** The image's `ExposedPorts` (`8080/tcp`); reachable through `-p HOST:GUEST`. */
  exposedPorts?: string[];
  /** Forwarded ports. */
  ports: Array<{ host: number; guest: number }>;
  /** Network access: "none" (no device), or a summary such as "allow-host api.test". */
  network: string;
  /** Stop after this long without clients (ms), or null. */
  idleTimeoutMs: number | null;
  /** Stop after this long in total (ms), or null. */
  timeoutMs: number | null;
}

/** A record with its liveness. */
export interface SandboxEntry {
  /** The record as read from disk. */
  record: SandboxRecord;
  /** `false` when the supervisor is gone. */
  alive: boolean;
}

/** Largest record file read (a record is a few hundred bytes). */
const MAX_RECORD_BYTES = 64 * 1024;

/** The record path of `name`. */
export function recordPath(dir: string, name: string): string {
  return join(dir, `${name}.json`);
}

/** The supervisor log path of `name`. */
export function logPath(dir: string, name: string): string {
  return join(dir, `${name}.log`);
}

function parseRecord(text: string): SandboxRecord | undefined {
  try {
    const r = JSON.parse(text);
    if (
      r?.version === 1 && typeof r.name === "string" && typeof r.supervisor?.pid === "number" &&
      typeof r.supervisor?.startTime === "number" && typeof r.controlSocket === "string"
    ) {
      return r as SandboxRecord;
    }
  } catch { /* torn or foreign */ }
  return undefined;
}

/** Reads the record of `name` (undefined when absent or unreadable). */
export async function readRecord(dir: string, name: string): Promise<SandboxRecord | undefined> {
  try {
    const path = recordPath(dir, name);
    const info = await Deno.stat(path);
    if (info.size > MAX_RECORD_BYTES) return undefined;
    return parseRecord(await Deno.readTextFile(path));
  } catch {
    return undefined;
  }
}

/** Reads one entry with liveness. */
export async function readEntry(dir: string, name: string): Promise<SandboxEntry | undefined> {
  const record = await readRecord(dir, name);
  if (!record) return undefined;
  return { record, alive: await processAlive(record.supervisor) };
}

/** Lists every record, live or stale, sorted by name. */
export async function listEntries(dir: string): Promise<SandboxEntry[]> {
  const out: SandboxEntry[] = [];
  let names: string[];
  try {
    names = (await Array.fromAsync(Deno.readDir(dir)))
      .filter((e) => e.isFile && e.name.endsWith(".json"))
      .map((e) => e.name.slice(0, -5));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return out;
    throw err;
  }
  for (const name of names) {
    const entry = await readEntry(dir, name);
    if (entry) out.push(entry);
  }
  return out.sort((a, b) => a.record.name.localeCompare(b.record.name));
}

/** Lists the live sandboxes, removing stale records on the way. */
export async function listLive(dir: string): Promise<SandboxRecord[]> {
  const entries = await listEntries(dir);
  for (const e of entries) if (!e.alive) await removeStale(dir, e.record);
  return entries.filter((e) => e.alive).map((e) => e.record);
}

/** Removes every stale record; returns their names. */
export async function pruneRegistry(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const e of await listEntries(dir)) {
    if (!e.alive && (await removeStale(dir, e.record))) removed.push(e.record.name);
  }
  return removed;
}

/** Removes `record` (and its log) if it is still the stale one on disk. */
export async function removeStale(dir: string, record: SandboxRecord): Promise<boolean> {
  const now = await readRecord(dir, record.name);
  if (
    !now || now.supervisor.pid !== record.supervisor.pid ||
    now.supervisor.startTime !== record.supervisor.startTime || (await processAlive(now.supervisor))
  ) {
    return false;
  }
  await Deno.remove(recordPath(dir, record.name)).catch(() => {});
  await Deno.remove(logPath(dir, record.name)).catch(() => {});
  return true;
}

/**
 * Claims `name` for this process by creating its record exclusively. A stale record (dead
 * supervisor) is removed first.
 *
 * @throws {SupervisorError} `name_in_use` when a live sandbox has the name.
 */
export async function claimName(
  dir: string,
  record: Omit<SandboxRecord, "version" | "supervisor">,
): Promise<SandboxRecord> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const self = await selfProcessId();
  const full: SandboxRecord = { version: 1, ...record, supervisor: self };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await Deno.writeTextFile(recordPath(dir, record.name), JSON.stringify(full) + "\n", {
        createNew: true,
        mode: 0o600,
      });
      return full;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const existing = await readEntry(dir, record.name);
      if (existing?.alive) break;
      if (existing) await removeStale(dir, existing.record);
      else await Deno.remove(recordPath(dir, record.name)).catch(() => {});
    }
  }
  throw new SupervisorError(
    "name_in_use",
    `Cannot start sandbox ${record.name}: a sandbox of that name is running ` +
      `(stop it with \`shuru stop ${record.name}\` or pick another --name)`,
  );
}

/** Rewrites this process's record (atomically). */
export async function updateRecord(dir: string, record: SandboxRecord): Promise<void> {
  const tmp = join(dir, `.${record.name}.${Deno.pid}.tmp`);
  await Deno.writeTextFile(tmp, JSON.stringify(record) + "\n", { mode: 0o600 });
  await Deno.rename(tmp, recordPath(dir, record.name));
}

/** Removes this process's record and log. */
export async function removeRecord(dir: string, name: string): Promise<void> {
  await Deno.remove(recordPath(dir, name)).catch(() => {});
  await Deno.remove(logPath(dir, name)).catch(() => {});
}

/** Resolves the sandbox a command means: `name`, or the only live one when omitted. */
export async function resolveSandbox(dir: string, name?: string): Promise<SandboxRecord> {
  if (name !== undefined) {
    const entry = await readEntry(dir, name);
    if (!entry || !entry.alive) {
      if (entry) await removeStale(dir, entry.record);
      const live = (await listLive(dir)).map((r) => r.name);
      throw new SupervisorError(
        "not_found",
        `Cannot find sandbox ${name}: ${
          live.length ? `running sandboxes: ${live.join(", ")}` : "no sandbox is running"
        } (start one with \`shuru start --name ${name}\`)`,
      );
    }
    return entry.record;
  }
  const live = await listLive(dir);
  if (live.length === 1) return live[0]!;
  throw new SupervisorError(
    live.length === 0 ? "not_found" : "ambiguous",
    live.length === 0
      ? "Cannot pick a sandbox: none is running (start one with `shuru start`)"
      : `Cannot pick a sandbox: ${live.length} are running (${
        live.map((r) => r.name).join(", ")
      }); name one of them`,
  );
}
