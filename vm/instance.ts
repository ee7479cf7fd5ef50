/**
 * Instance folders: one per running VM under `<home>/instances/<id>/`, holding its sockets,
 * console log and owner record. A folder whose owner process is gone is a leftover of a
 * crashed run; {@linkcode pruneInstances} removes it and kills its QEMU if still running.
 *
 * @module
 */

import { join } from "node:path";
import { hostOs, maxSocketPath } from "../ffi/mod.ts";
import {
  nameProblem,
  processAlive,
  type ProcessId,
  processId,
  selfProcessId,
} from "../host/mod.ts";
import { VmError } from "./errors.ts";

/** The files of one instance. */
export interface Instance {
  /** Instance id (folder name). */
  id: string;
  /** The folder. */
  dir: string;
  /** Agent channel socket (the VM backend listens here). */
  agentSocket: string;
  /** NBD server socket for the root disk. */
  nbdSocket: string;
  /** Network frames socket (ours). */
  netSocket: string;
  /** The VM's end of a datagram network link (QEMU binds it). */
  netVmSocket: string;
  /** Serial console log. */
  consoleLog: string;
}

/** The owner record (`owner.json`). */
export interface OwnerRecord {
  /** The shuru process that created the instance. */
  owner: ProcessId;
  /** The VM process, once started. */
  vm?: ProcessId;
  /** ISO time of creation. */
  createdAt: string;
}

/** Unix socket paths are limited to 107 bytes plus NUL on Linux, 103 on macOS. */
const MAX_SOCKET_PATH = maxSocketPath(hostOs() ?? "linux");
const OWNER_FILE = "owner.json";

function instanceFiles(instancesDir: string, id: string): Instance {
  const dir = join(instancesDir, id);
  return {
    id,
    dir,
    agentSocket: join(dir, "agent.sock"),
    nbdSocket: join(dir, "nbd.sock"),
    netSocket: join(dir, "net.sock"),
    netVmSocket: join(dir, "netvm.sock"),
    consoleLog: join(dir, "console.log"),
  };
}

/** Options of {@linkcode createInstance}. */
export interface CreateInstanceOptions {
  /** Folder name (a named sandbox's name); default `<pid>-<random>`. Must not exist yet. */
  id?: string;
}

/**
 * Creates a new instance folder owned by this process.
 *
 * @throws {VmError} `invalid_config` when the path is too long for sockets, `instance_busy` when
 *   `id` is taken.
 */
export async function createInstance(
  instancesDir: string,
  options: CreateInstanceOptions = {},
): Promise<Instance> {
  const id = options.id ?? `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const problem = nameProblem("sandbox", id);
  if (problem) throw new VmError("invalid_config", `Cannot create instance ${id}: ${problem}`);
  const instance = instanceFiles(instancesDir, id);
  if (instance.agentSocket.length > MAX_SOCKET_PATH) {
    throw new VmError(
      "invalid_config",
      `Cannot create the instance folder: ${instance.dir} is too long for Unix sockets ` +
        `(${MAX_SOCKET_PATH} bytes); set SHURU_HOME to a shorter path`,
    );
  }
  await Deno.mkdir(instancesDir, { recursive: true, mode: 0o700 });
  try {
    await Deno.mkdir(instance.dir, { mode: 0o700 });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    throw new VmError(
      "instance_busy",
      `Cannot create instance ${id}: ${instance.dir} already exists (run \`shuru prune\` ` +
        "if its sandbox is gone)",
      { cause: err },
    );
  }
  const owner = await selfProcessId();
  await writeOwner(instance, { owner, createdAt: new Date().toISOString() });
  return instance;
}

async function writeOwner(instance: Instance, record: OwnerRecord): Promise<void> {
  const tmp = join(instance.dir, `${OWNER_FILE}.tmp`);
  await Deno.writeTextFile(tmp, JSON.stringify(record) + "\n");
  await Deno.rename(tmp, join(instance.dir, OWNER_FILE));
}

async function readOwner(dir: string): Promise<OwnerRecord | undefined> {
  try {
    const record = JSON.parse(await Deno.readTextFile(join(dir, OWNER_FILE)));
    if (typeof record?.owner?.pid === "number" && typeof record?.owner?.startTime === "number") {
      return record as OwnerRecord;
    }
  } catch { /* missing or torn */ }
  return undefined;
}

/** Records the VM process of `instance` so prune can kill it if we crash. */
export async function recordVmProcess(instance: Instance, pid: number): Promise<void> {
  const record = await readOwner(instance.dir);
  const vm = await processId(pid);
  if (!record || !vm) return;
  await writeOwner(instance, { ...record, vm });
}

/** Removes the instance folder. */
export async function removeInstance(instance: Instance): Promise<void> {
  await Deno.remove(instance.dir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

/** What {@linkcode pruneInstances} did. */
export interface PruneResult {
  /** Folders removed (their owner was gone). */
  removed: string[];
  /** VM processes killed (they outlived their owner). */
  killed: number[];
  /** Folders kept because their owner still runs. */
  kept: string[];
}

/** Grace period for a folder without a readable owner record (it may be being created). */
const UNOWNED_GRACE_MS = 60_000;

/** Removes instance folders whose owner process is gone, killing their leftover VMs. */
export async function pruneInstances(instancesDir: string): Promise<PruneResult> {
  const result: PruneResult = { removed: [], killed: [], kept: [] };
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(instancesDir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return result;
    throw err;
  }
  for (const entry of entries) {
    if (!entry.isDirectory) continue;
    const dir = join(instancesDir, entry.name);
    const record = await readOwner(dir);
    if (!record) {
      const info = await Deno.stat(dir);
      if (Date.now() - (info.mtime?.getTime() ?? 0) < UNOWNED_GRACE_MS) {
        result.kept.push(entry.name);
        continue;
      }
    } else if (await processAlive(record.owner)) {
      result.kept.push(entry.name);
      continue;
    }
    if (record?.vm && (await processAlive(record.vm))) {
      try {
        Deno.kill(record.vm.pid, "SIGKILL");
        result.killed.push(record.vm.pid);
      } catch { /* exited meanwhile */ }
    }
    await Deno.remove(dir, { recursive: true });
    result.removed.push(entry.name);
  }
  return result;
}
