/**
 * Typed request, result and in-stream message shapes of the agent protocol, plus validators for
 * untrusted JSON (the agent validates every request with {@link parseRequest}; the host
 * validates results with the `parse*Result` helpers).
 *
 * How operations map onto streams (see docs/agent_protocol.md):
 * - The host OPENs a stream whose JSON header is a {@link Request}. The agent answers with DATA on
 *   the stream's channels, optional MESSAGE frames, and finally CLOSE carrying the op's result
 *   (e.g. {@link ExecExit}) or RESET carrying an `AgentErrorPayload`.
 * - exec: channel 0 = stdin (host → guest, FIN = EOF), 1 = stdout, 2 = stderr (guest → host,
 *   FIN at EOF). With `tty`, channel 1 carries the PTY output and channel 2 is unused. Control
 *   messages: host → guest {@link ResizeMessage}, {@link SignalMessage}; guest → host
 *   {@link StartedMessage}. CLOSE = {@link ExecExit}.
 * - read_file: file bytes on channel 0 (guest → host), then CLOSE {@link SizeResult}.
 * - write_file: bytes on channel 0 (host → guest) ending with FIN; CLOSE {@link SizeResult} after
 *   the data is on disk.
 * - read_dir / watch: newline-delimited JSON on channel 0 (guest → host): one
 *   {@link DirEntry} / {@link WatchEvent} per line (each line ≤ {@link MAX_JSON_LINE}). read_dir
 *   ends with CLOSE {@link CountResult}; watch runs until the host RESETs the stream (code
 *   `"cancelled"`). watch sends MESSAGE {@link WatchingMessage} once the watcher is installed.
 * - forward: raw TCP bytes both ways on channel 0; FIN = TCP half-close; CLOSE `{}` when both
 *   directions are done.
 * - set_identity: no DATA; CLOSE {@link IdentityResult} once the guest's RNG is reseeded, its
 *   clock set and its names changed (what a guest restored from a snapshot needs first).
 * - exec with `keep`: the process outlives the session (a detach, a lost host); its output is
 *   kept in a bounded buffer. processes: CLOSE {@link ProcessesResult} lists the kept ones;
 *   attach: an exec stream again for kept process `id` (output replayed from the given byte
 *   offsets, then live; CLOSE = {@link ExecExit}).
 * - detach: CLOSE {@link DetachResult} is the last frame the agent writes on the connection; it
 *   then reads nothing more and waits for a new host (the host sends nothing after the request),
 *   so a memory snapshot taken then restores an agent waiting for a fresh HELLO.
 * - net_config: no DATA; CLOSE `{}` once the guest's NIC is up with the address, default route
 *   and MTU given, or down.
 * - everything else: no DATA; CLOSE carries the result.
 *
 * @module
 */

import { AgentInvalidArgumentError } from "./errors.ts";

/** Max bytes of one NDJSON line on read_dir / watch channels. */
export const MAX_JSON_LINE = 64 * 1024;

/** Caps on request fields (checked by {@link parseRequest}). */
export const REQUEST_LIMITS = {
  /** Fewest bytes of entropy a set_identity carries (256 bits). */
  ENTROPY_MIN: 32,
  /** Most bytes of entropy a set_identity carries (the kernel's pool is 256 bits anyway). */
  ENTROPY_MAX: 512,
  /** Max argv entries. */
  ARGV: 4096,
  /** Max env entries. */
  ENV: 4096,
  /** Max bytes of a path. */
  PATH: 4096,
  /** Max PTY rows/cols. */
  TTY_SIZE: 4096,
} as const;

/** PTY settings of a TTY exec. */
export interface TtySize {
  /** Rows (1..4096). */
  rows: number;
  /** Columns (1..4096). */
  cols: number;
}

/** Requests a process; the stream lives as long as the process (spawn = exec kept open). */
export interface ExecRequest {
  /** Operation name. */
  op: "exec";
  /** Program and arguments; argv[0] is looked up in PATH when it has no slash. */
  argv: string[];
  /** Extra environment variables, merged over the agent's environment. */
  env?: Record<string, string>;
  /** Working directory (absolute). Default: the agent's cwd ("/" in the VM). */
  cwd?: string;
  /** Run under a new PTY of this size, TERM from `term` (default "xterm-256color"). */
  tty?: TtySize & { term?: string };
  /** true: stdin is piped from channel 0; false/absent: stdin is /dev/null. Ignored with tty. */
  stdin?: boolean;
  /**
   * Keep the process when the session ends (detach, host gone): it goes on running, its output
   * is buffered, and a later session can `attach` to it. Without it, the end of the session
   * kills the process.
   */
  keep?: boolean;
  /** With `keep`: the host's name for the process (e.g. the control protocol's pid), listed back. */
  label?: string;
}

/** Lists the kept processes (running, or exited and not yet reported to a host). */
export interface ProcessesRequest {
  /** Operation name. */
  op: "processes";
}

/**
 * Attaches to kept process `id`: an exec stream again (channels, messages and CLOSE as exec),
 * whose output starts at byte `stdout` of its standard output and `stderr` of its standard error
 * (what the host already has), replayed from the agent's buffer, then live.
 */
export interface AttachRequest {
  /** Operation name. */
  op: "attach";
  /** The kept process (`StartedMessage.id`). */
  id: string;
  /** Bytes of stdout the host already has. @default 0 */
  stdout?: number;
  /** Bytes of stderr the host already has. @default 0 */
  stderr?: number;
}

/**
 * Ends the session on purpose: the agent answers CLOSE {@link DetachResult} as its last frame,
 * keeps every kept process, and waits for a new host. The host sends nothing after this request.
 */
export interface DetachRequest {
  /** Operation name. */
  op: "detach";
}

/** Sets up (or takes down) the guest's network interface. */
export interface NetConfigRequest {
  /** Operation name. */
  op: "net_config";
  /** Up with the settings below, or down. */
  up: boolean;
  /** IPv4 address (dotted). */
  address?: string;
  /** Prefix length of the address. */
  prefix?: number;
  /** Default gateway (dotted). */
  gateway?: string;
  /** MTU. */
  mtu?: number;
}

/** Streams a file's bytes from the guest (channel 0), from `offset` for `length` bytes. */
export interface ReadFileRequest {
  /** Operation name. */
  op: "read_file";
  /** Absolute path. */
  path: string;
  /** Start offset. @default 0 */
  offset?: number;
  /** Max bytes to read. @default to the end */
  length?: number;
}

/** Streams bytes from the host (channel 0, FIN at end) into a guest file. */
export interface WriteFileRequest {
  /** Operation name. */
  op: "write_file";
  /** Absolute path. */
  path: string;
  /** Permission bits for a new file. @default 0o644 */
  mode?: number;
  /** Append instead of truncating. @default false */
  append?: boolean;
  /** Fail with already_exists if the file exists. @default false */
  createNew?: boolean;
  /**
   * Write at this byte offset without truncating (pwrite semantics; the file is created if
   * missing). Exclusive with `append`.
   */
  offset?: number;
}

/** Creates a directory. */
export interface MkdirRequest {
  /** Operation name. */
  op: "mkdir";
  /** Absolute path. */
  path: string;
  /** Create parents; no error if it exists. @default false */
  recursive?: boolean;
  /** Permission bits. @default 0o755 */
  mode?: number;
}

/** Lists a directory as NDJSON {@link DirEntry} lines on channel 0. */
export interface ReadDirRequest {
  /** Operation name. */
  op: "read_dir";
  /** Absolute path. */
  path: string;
}

/** Stats a path; CLOSE carries a {@link FileInfo}. */
export interface StatRequest {
  /** Operation name. */
  op: "stat";
  /** Absolute path. */
  path: string;
  /** Stat the link itself instead of its target. @default false */
  lstat?: boolean;
}

/** Removes a file, symlink or (empty unless recursive) directory. */
export interface RemoveRequest {
  /** Operation name. */
  op: "remove";
  /** Absolute path. */
  path: string;
  /** Remove directories and their contents. @default false */
  recursive?: boolean;
}

/** Renames (moves) a path, replacing a file at `to`. */
export interface RenameRequest {
  /** Operation name. */
  op: "rename";
  /** Absolute source path. */
  from: string;
  /** Absolute destination path. */
  to: string;
}

/** Copies a file (or a directory tree with `recursive`) inside the guest. */
export interface CopyRequest {
  /** Operation name. */
  op: "copy";
  /** Absolute source path. */
  from: string;
  /** Absolute destination path. */
  to: string;
  /** Copy directories recursively. @default false */
  recursive?: boolean;
}

/** Changes permission bits. */
export interface ChmodRequest {
  /** Operation name. */
  op: "chmod";
  /** Absolute path. */
  path: string;
  /** Permission bits (0..0o7777). */
  mode: number;
}

/** Watches a path; NDJSON {@link WatchEvent} lines on channel 0 until the host RESETs. */
export interface WatchRequest {
  /** Operation name. */
  op: "watch";
  /** Absolute path. */
  path: string;
  /** Watch subdirectories too. @default true */
  recursive?: boolean;
}

/** Connects to a TCP port in the guest and relays bytes on channel 0. */
export interface ForwardRequest {
  /** Operation name. */
  op: "forward";
  /** Guest TCP port (1..65535). */
  port: number;
  /** Guest address to connect to. @default "127.0.0.1" */
  host?: string;
}

/** How a host folder reaches the guest: virtio-9p (QEMU) or virtio-fs (Virtualization.framework). */
export type MountTransport = "9p" | "virtiofs";

/** Mounts a shared host folder (a virtio-9p or virtio-fs tag) at a guest path. */
export interface MountRequest {
  /** Operation name. */
  op: "mount";
  /** The share's tag. */
  tag: string;
  /** Absolute guest path (created if missing). */
  path: string;
  /** "ro": read-only share under a tmpfs overlay (guest writes vanish); "rw": writes reach the host. */
  mode: "ro" | "rw";
  /** The device the share is on. @default "9p" */
  transport?: MountTransport;
}

/**
 * Makes the guest unique and current, as a guest restored from a memory snapshot must be
 * before anything runs in it (all of its clones share one RNG state, clock and names): mixes
 * `entropy` into the kernel's input pool crediting 8 bits per byte (RNDADDENTROPY) and
 * reseeds the CRNG from it (RNDRESEEDCRNG), sets the wall clock (clock_settime), the kernel
 * hostname and `/etc/machine-id`. CLOSE carries an {@link IdentityResult}.
 */
export interface SetIdentityRequest {
  /** Operation name. */
  op: "set_identity";
  /** Fresh host randomness, base64: 32-512 bytes. */
  entropy: string;
  /** The host's wall clock when it sent the request, milliseconds since the epoch. */
  unixMs: number;
  /** Kernel hostname (1-64 of letters, digits, `-`, `.`; starting with a letter or digit). */
  hostname: string;
  /** `/etc/machine-id`: 32 lower-case hex digits. */
  machineId: string;
}

/** Syncs disks and powers the guest off; CLOSE `{}` is sent before power-off. */
export interface ShutdownRequest {
  /** Operation name. */
  op: "shutdown";
}

/** Every request a stream can be opened with. */
export type Request =
  | ExecRequest
  | ReadFileRequest
  | WriteFileRequest
  | MkdirRequest
  | ReadDirRequest
  | StatRequest
  | RemoveRequest
  | RenameRequest
  | CopyRequest
  | ChmodRequest
  | WatchRequest
  | ForwardRequest
  | MountRequest
  | SetIdentityRequest
  | ShutdownRequest
  | ProcessesRequest
  | AttachRequest
  | DetachRequest
  | NetConfigRequest;

/** Operation names. */
export type Op = Request["op"];

/** All operation names (capabilities an agent may announce). */
export const OPS: readonly Op[] = [
  "exec",
  "read_file",
  "write_file",
  "mkdir",
  "read_dir",
  "stat",
  "remove",
  "rename",
  "copy",
  "chmod",
  "watch",
  "forward",
  "mount",
  "set_identity",
  "shutdown",
  "processes",
  "attach",
  "detach",
  "net_config",
];

// ---------------------------------------------------------------- in-stream messages (MESSAGE)

/** Host → guest on an exec stream with tty: new terminal size. */
export interface ResizeMessage {
  /** Message type. */
  type: "resize";
  /** Rows. */
  rows: number;
  /** Columns. */
  cols: number;
}

/** Host → guest on an exec stream: send a signal to the process group. */
export interface SignalMessage {
  /** Message type. */
  type: "signal";
  /** Signal name, e.g. "SIGTERM", "SIGKILL", "SIGINT". */
  signal: Deno.Signal;
}

/** Guest → host on an exec stream: the process started. */
export interface StartedMessage {
  /** Message type. */
  type: "started";
  /** Guest pid (also the process group id). */
  pid: number;
  /** With `keep`: the agent's id of the kept process (for `attach`). */
  id?: string;
}

/**
 * Guest → host on a watch stream: the watcher is installed; changes made after the host received
 * this are reported. Sent once, before any event line.
 */
export interface WatchingMessage {
  /** Message type. */
  type: "watching";
}

/** Messages on exec streams. */
export type ExecMessage = ResizeMessage | SignalMessage | StartedMessage;

// ----------------------------------------------------------------------------- results (CLOSE)

/** CLOSE of an exec stream. */
export interface ExecExit {
  /** Exit code; 128+N when killed by signal N; 127 when the program was not found. */
  exitCode: number;
  /** Name of the signal that killed the process, if any. */
  signal?: string;
}

/** CLOSE of read_file / write_file: bytes transferred. */
export interface SizeResult {
  /** Bytes read or written. */
  size: number;
}

/** CLOSE of set_identity. */
export interface IdentityResult {
  /** Entropy bits credited to the kernel's input pool before the reseed. */
  entropyBits: number;
  /** How far the guest's wall clock moved (new minus old), in milliseconds. */
  clockStepMs: number;
}

/** One kept process, as `processes` lists it. */
export interface KeptProcessInfo {
  /** The agent's id (for `attach`). */
  id: string;
  /** The host's label given at exec. */
  label?: string;
  /** Program and arguments. */
  argv: string[];
  /** Guest pid. */
  pid: number;
  /** Runs on a PTY. */
  tty: boolean;
  /** Its stdin is piped (false: /dev/null). */
  stdin: boolean;
  /** Still running. */
  running: boolean;
  /** Exit status once it has exited. */
  exit?: ExecExit;
  /** Bytes it has written to stdout and to stderr so far. */
  stdoutBytes: number;
  /** See `stdoutBytes`. */
  stderrBytes: number;
}

/** CLOSE of processes. */
export interface ProcessesResult {
  /** The kept processes, oldest first. */
  processes: KeptProcessInfo[];
}

/** CLOSE of detach. */
export interface DetachResult {
  /** Kept processes the agent holds. */
  kept: number;
}

/** CLOSE of read_dir: entries sent. */
export interface CountResult {
  /** Number of entries. */
  count: number;
}

/** Kind of a directory entry / file. */
export type FileType = "file" | "dir" | "symlink" | "other";

/** One NDJSON line of read_dir. */
export interface DirEntry {
  /** Entry name (no slash). */
  name: string;
  /** Entry type (symlinks are not followed). */
  type: FileType;
}

/** CLOSE of stat. */
export interface FileInfo {
  /** File type (`lstat` decides whether symlinks are followed). */
  type: FileType;
  /** Size in bytes. */
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  /** Modification time, ms since epoch, or null. */
  mtime: number | null;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
}

/** Kind of a watch event. */
export type WatchEventKind = "create" | "modify" | "delete" | "rename";

/** One NDJSON line of watch. */
export interface WatchEvent {
  /** What happened. */
  kind: WatchEventKind;
  /** Absolute paths involved (rename: [from, to] when both are known). */
  paths: string[];
}

// -------------------------------------------------------------------------------- validators

type Obj = Record<string, unknown>;

function bad(message: string): AgentInvalidArgumentError {
  return new AgentInvalidArgumentError(`Cannot accept request: ${message}`);
}

function str(o: Obj, key: string, max: number = REQUEST_LIMITS.PATH): string {
  const v = o[key];
  if (typeof v !== "string") throw bad(`"${key}" must be a string`);
  if (v.length > max) throw bad(`"${key}" is longer than ${max}`);
  if (v.includes("\0")) throw bad(`"${key}" contains a NUL byte`);
  return v;
}

function path(o: Obj, key = "path"): string {
  const v = str(o, key);
  if (!v.startsWith("/")) throw bad(`"${key}" must be an absolute path, got "${v}"`);
  return v;
}

function optBool(o: Obj, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw bad(`"${key}" must be a boolean`);
  return v;
}

function int(o: Obj, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw bad(`"${key}" must be an integer in ${min}..${max}`);
  }
  return v;
}

function optInt(o: Obj, key: string, min: number, max: number): number | undefined {
  return o[key] === undefined ? undefined : int(o, key, min, max);
}

function stripUndefined<T extends Obj>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

/** Validates a PTY size (rows/cols in 1..4096). */
export function parseTtySize(o: Obj): TtySize {
  return {
    rows: int(o, "rows", 1, REQUEST_LIMITS.TTY_SIZE),
    cols: int(o, "cols", 1, REQUEST_LIMITS.TTY_SIZE),
  };
}

/**
 * Validates an untrusted OPEN header and returns a typed {@link Request}; throws
 * {@link AgentInvalidArgumentError} naming the bad field (send it back in RESET).
 */
export function parseRequest(value: Obj): Request {
  const op = value.op;
  switch (op) {
    case "exec": {
      const argvRaw = value.argv;
      if (!Array.isArray(argvRaw) || argvRaw.length === 0) {
        throw bad(`"argv" must be a non-empty array of strings`);
      }
      if (argvRaw.length > REQUEST_LIMITS.ARGV) throw bad(`"argv" has over 4096 entries`);
      const argv = argvRaw.map((a, i) => {
        if (typeof a !== "string" || a.includes("\0")) throw bad(`argv[${i}] must be a string`);
        return a;
      });
      let env: Record<string, string> | undefined;
      if (value.env !== undefined) {
        if (typeof value.env !== "object" || value.env === null || Array.isArray(value.env)) {
          throw bad(`"env" must be an object of strings`);
        }
        const entries = Object.entries(value.env as Obj);
        if (entries.length > REQUEST_LIMITS.ENV) throw bad(`"env" has over 4096 entries`);
        env = {};
        for (const [k, v] of entries) {
          if (
            typeof v !== "string" || k === "" || k.includes("=") || k.includes("\0") ||
            v.includes("\0")
          ) {
            throw bad(`env entry "${k}" is invalid`);
          }
          env[k] = v;
        }
      }
      let tty: ExecRequest["tty"];
      if (value.tty !== undefined) {
        if (typeof value.tty !== "object" || value.tty === null) {
          throw bad(`"tty" must be an object`);
        }
        const t = value.tty as Obj;
        tty = parseTtySize(t);
        if (t.term !== undefined) tty.term = str(t, "term", 256);
      }
      return stripUndefined({
        op,
        argv,
        env,
        cwd: value.cwd === undefined ? undefined : path(value, "cwd"),
        tty,
        stdin: optBool(value, "stdin"),
        keep: optBool(value, "keep"),
        label: value.label === undefined ? undefined : str(value, "label", 256),
      });
    }
    case "processes":
      return { op };
    case "attach":
      return stripUndefined({
        op,
        id: str(value, "id", 64),
        stdout: optInt(value, "stdout", 0, Number.MAX_SAFE_INTEGER),
        stderr: optInt(value, "stderr", 0, Number.MAX_SAFE_INTEGER),
      });
    case "detach":
      return { op };
    case "net_config": {
      const up = optBool(value, "up");
      if (up === undefined) throw bad(`"up" must be a boolean`);
      const ipv4 = (key: string) => {
        if (value[key] === undefined) return undefined;
        const v = str(value, key, 15);
        if (!/^(\d{1,3})(\.\d{1,3}){3}$/.test(v) || v.split(".").some((n) => Number(n) > 255)) {
          throw bad(`"${key}" must be a dotted IPv4 address`);
        }
        return v;
      };
      return stripUndefined({
        op,
        up,
        address: ipv4("address"),
        prefix: optInt(value, "prefix", 0, 32),
        gateway: ipv4("gateway"),
        mtu: optInt(value, "mtu", 68, 65535),
      });
    }
    case "read_file":
      return stripUndefined({
        op,
        path: path(value),
        offset: optInt(value, "offset", 0, Number.MAX_SAFE_INTEGER),
        length: optInt(value, "length", 0, Number.MAX_SAFE_INTEGER),
      });
    case "write_file": {
      const req = stripUndefined({
        op,
        path: path(value),
        mode: optInt(value, "mode", 0, 0o7777),
        append: optBool(value, "append"),
        createNew: optBool(value, "createNew"),
        offset: optInt(value, "offset", 0, Number.MAX_SAFE_INTEGER),
      });
      if (req.offset !== undefined && req.append) {
        throw bad(`"offset" and "append" cannot be combined`);
      }
      return req;
    }
    case "mkdir":
      return stripUndefined({
        op,
        path: path(value),
        recursive: optBool(value, "recursive"),
        mode: optInt(value, "mode", 0, 0o7777),
      });
    case "read_dir":
      return { op, path: path(value) };
    case "stat":
      return stripUndefined({ op, path: path(value), lstat: optBool(value, "lstat") });
    case "remove":
      return stripUndefined({ op, path: path(value), recursive: optBool(value, "recursive") });
    case "rename":
      return { op, from: path(value, "from"), to: path(value, "to") };
    case "copy":
      return stripUndefined({
        op,
        from: path(value, "from"),
        to: path(value, "to"),
        recursive: optBool(value, "recursive"),
      });
    case "chmod":
      return { op, path: path(value), mode: int(value, "mode", 0, 0o7777) };
    case "watch":
      return stripUndefined({ op, path: path(value), recursive: optBool(value, "recursive") });
    case "forward":
      return stripUndefined({
        op,
        port: int(value, "port", 1, 65535),
        host: value.host === undefined ? undefined : str(value, "host", 255),
      });
    case "mount": {
      const mode = value.mode;
      if (mode !== "ro" && mode !== "rw") throw bad(`"mode" must be "ro" or "rw"`);
      const transport = value.transport;
      if (transport !== undefined && transport !== "9p" && transport !== "virtiofs") {
        throw bad(`"transport" must be "9p" or "virtiofs"`);
      }
      const req: MountRequest = { op, tag: str(value, "tag", 64), path: path(value), mode };
      return transport === undefined ? req : { ...req, transport };
    }
    case "set_identity": {
      const entropy = str(value, "entropy", 1024);
      let bytes: Uint8Array;
      try {
        bytes = Uint8Array.fromBase64(entropy);
      } catch {
        throw bad(`"entropy" is not base64`);
      }
      if (bytes.length < REQUEST_LIMITS.ENTROPY_MIN || bytes.length > REQUEST_LIMITS.ENTROPY_MAX) {
        throw bad(
          `"entropy" must be ${REQUEST_LIMITS.ENTROPY_MIN}-${REQUEST_LIMITS.ENTROPY_MAX} bytes`,
        );
      }
      const unixMs = value.unixMs;
      if (typeof unixMs !== "number" || !Number.isFinite(unixMs) || unixMs <= 0) {
        throw bad(`"unixMs" must be a positive number`);
      }
      const hostname = str(value, "hostname", 64);
      if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/.test(hostname)) {
        throw bad(`"hostname" must be 1-64 of letters, digits, '-', '.'`);
      }
      const machineId = str(value, "machineId", 32);
      if (!/^[0-9a-f]{32}$/.test(machineId)) {
        throw bad(`"machineId" must be 32 lower-case hex digits`);
      }
      return { op, entropy, unixMs, hostname, machineId };
    }
    case "shutdown":
      return { op };
    default:
      throw bad(`unknown op ${JSON.stringify(op)?.slice(0, 64)}`);
  }
}

/**
 * Validates an untrusted exec-stream MESSAGE (host → guest direction); throws
 * {@link AgentInvalidArgumentError}.
 */
export function parseExecMessage(value: Obj): ExecMessage {
  switch (value.type) {
    case "resize":
      return { type: "resize", ...parseTtySize(value) };
    case "signal": {
      const signal = str(value, "signal", 16);
      if (!/^SIG[A-Z0-9]+$/.test(signal)) throw bad(`"signal" must look like "SIGTERM"`);
      return { type: "signal", signal: signal as Deno.Signal };
    }
    case "started": {
      const pid = int(value, "pid", 1, 0x7fff_ffff);
      return value.id === undefined
        ? { type: "started", pid }
        : { type: "started", pid, id: str(value, "id", 64) };
    }
    default:
      throw bad(`unknown message type ${JSON.stringify(value.type)?.slice(0, 64)}`);
  }
}

/** Validates an exec CLOSE payload from the guest. */
export function parseExecExit(value: Obj): ExecExit {
  const exitCode = int(value, "exitCode", 0, 255);
  if (value.signal !== undefined) return { exitCode, signal: str(value, "signal", 16) };
  return { exitCode };
}

/** Validates a processes CLOSE payload. */
export function parseProcessesResult(value: Obj): ProcessesResult {
  if (!Array.isArray(value.processes) || value.processes.length > 4096) {
    throw bad(`"processes" must be an array`);
  }
  return {
    processes: value.processes.map((raw) => {
      if (typeof raw !== "object" || raw === null) throw bad("a process must be an object");
      const p = raw as Obj;
      if (!Array.isArray(p.argv) || !p.argv.every((a) => typeof a === "string")) {
        throw bad(`"argv" must be an array of strings`);
      }
      const info: KeptProcessInfo = {
        id: str(p, "id", 64),
        argv: p.argv as string[],
        pid: int(p, "pid", 1, 0x7fff_ffff),
        tty: optBool(p, "tty") ?? false,
        stdin: optBool(p, "stdin") ?? false,
        running: optBool(p, "running") ?? false,
        stdoutBytes: int(p, "stdoutBytes", 0, Number.MAX_SAFE_INTEGER),
        stderrBytes: int(p, "stderrBytes", 0, Number.MAX_SAFE_INTEGER),
      };
      if (p.label !== undefined) info.label = str(p, "label", 256);
      if (p.exit !== undefined) {
        if (typeof p.exit !== "object" || p.exit === null) throw bad(`"exit" must be an object`);
        info.exit = parseExecExit(p.exit as Obj);
      }
      return info;
    }),
  };
}

/** Validates a set_identity CLOSE payload. */
export function parseIdentityResult(value: Obj): IdentityResult {
  const clockStepMs = value.clockStepMs;
  if (typeof clockStepMs !== "number" || !Number.isFinite(clockStepMs)) {
    throw bad(`"clockStepMs" must be a number`);
  }
  return { entropyBits: int(value, "entropyBits", 0, 8 * 512), clockStepMs };
}

/** Validates a read_file / write_file CLOSE payload. */
export function parseSizeResult(value: Obj): SizeResult {
  return { size: int(value, "size", 0, Number.MAX_SAFE_INTEGER) };
}

function fileType(v: unknown): FileType {
  if (v === "file" || v === "dir" || v === "symlink" || v === "other") return v;
  throw bad(`"type" must be file, dir, symlink or other`);
}

/** Validates a stat CLOSE payload. */
export function parseFileInfo(value: Obj): FileInfo {
  const mtime = value.mtime;
  if (mtime !== null && (typeof mtime !== "number" || !Number.isFinite(mtime))) {
    throw bad(`"mtime" must be a number or null`);
  }
  return {
    type: fileType(value.type),
    size: int(value, "size", 0, Number.MAX_SAFE_INTEGER),
    mode: int(value, "mode", 0, 0o7777),
    mtime: mtime as number | null,
    uid: int(value, "uid", 0, 0xffff_ffff),
    gid: int(value, "gid", 0, 0xffff_ffff),
  };
}

/** Validates one read_dir line. */
export function parseDirEntry(value: Obj): DirEntry {
  const name = str(value, "name", 4096);
  if (name.includes("/")) throw bad(`entry name contains "/"`);
  return { name, type: fileType(value.type) };
}

/** Validates one watch line. */
export function parseWatchEvent(value: Obj): WatchEvent {
  const kind = value.kind;
  if (kind !== "create" && kind !== "modify" && kind !== "delete" && kind !== "rename") {
    throw bad(`"kind" must be create, modify, delete or rename`);
  }
  if (!Array.isArray(value.paths) || value.paths.length > 2) {
    throw bad(`"paths" must be an array of at most 2 strings`);
  }
  const paths = value.paths.map((p, i) => {
    if (typeof p !== "string") throw bad(`paths[${i}] must be a string`);
    return p;
  });
  return { kind, paths };
}
