/**
 * What the control server needs from a running sandbox. The host-side `Sandbox` of `sandbox/`
 * (over a guest agent connection) is bound to it in `agent_backend.ts`; the supervisor adds
 * `checkpoint` and `shutdown`.
 *
 * Errors thrown by a backend should carry an errno-style `code` or a Deno error class (NotFound,
 * PermissionDenied...); the server maps them to `data.kind`.
 *
 * @module
 */

/** Options of {@linkcode ControlBackend.spawn}. */
export interface BackendSpawnOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory in the guest. */
  cwd?: string;
  /** Pipe stdin (default true); false gives the process /dev/null. */
  stdin?: boolean;
  /** Run on a pseudo-terminal (stderr is merged into stdout). */
  tty?: { rows: number; cols: number };
  /** The protocol pid the process gets (the agent lists it back after a resume). */
  label?: string;
}

/** A process the backend found running (a sandbox resumed from a memory checkpoint). */
export interface AdoptedProcess {
  /** Its protocol pid, as given at spawn (`label`), if known. */
  label?: string;
  /** The command. */
  argv: string[];
  /** The handle. */
  process: BackendProcess;
}

/** How a process ended. */
export interface BackendExit {
  /** Exit code; 128+N when killed by signal N. */
  code: number;
  /** Name of the signal that killed it ("SIGKILL"), or null. */
  signal: string | null;
}

/** A process running in the sandbox. */
export interface BackendProcess {
  /** Its standard output (the terminal's output with a TTY). */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Its standard error; null with a TTY. */
  readonly stderr: ReadableStream<Uint8Array> | null;
  /** Writes to its standard input; resolves when the bytes are accepted (backpressure). */
  write(data: Uint8Array): Promise<void>;
  /** Closes its standard input (EOF). */
  closeStdin(): Promise<void>;
  /** Sends a signal ("SIGTERM", "SIGKILL"...) to its process group. */
  kill(signal: string): Promise<void>;
  /** Resizes its terminal (TTY processes only). */
  resize?(rows: number, cols: number): Promise<void>;
  /** Resolves when it has exited. */
  readonly status: Promise<BackendExit>;
}

/** One directory entry. */
export interface BackendDirEntry {
  /** File name. */
  name: string;
  /** What it is. */
  type: "file" | "dir" | "symlink" | "other";
  /** Size in bytes (0 for directories when unknown). */
  size: number;
}

/** File metadata. */
export interface BackendStat {
  /** Size in bytes. */
  size: number;
  /** Permission bits and file type, as st_mode. */
  mode: number;
  /** Modification time in milliseconds since the epoch. */
  mtimeMs: number;
  /** Is a directory. */
  isDir: boolean;
  /** Is a regular file. */
  isFile: boolean;
  /** Is a symbolic link. */
  isSymlink: boolean;
}

/** A file change seen by a watch. */
export interface BackendFileEvent {
  /** Path of the file that changed. */
  path: string;
  /** What happened. */
  event: "create" | "modify" | "delete" | "rename" | "other";
}

/** A running watch. */
export interface BackendWatch extends AsyncIterable<BackendFileEvent> {
  /** Stops the watch; the iteration ends. */
  close(): Promise<void>;
}

/** What a live checkpoint did (the runner's result; the server reports it in snake_case). */
export interface CheckpointReport {
  /** Milliseconds the guest was held (filesystem frozen; with memory: the VM paused). */
  pauseMs: number;
  /** Milliseconds from the request to the checkpoint being written. */
  totalMs: number;
  /** The store's side of the save. */
  saved: {
    hashedBlocks: number;
    newChunks: number;
    newBytes: number;
    usedBlocks: number;
    /** With memory: the RAM image's figures. */
    memory?: { size: number; usedBlocks: number; newChunks: number; stateBytes: number };
  };
}

/** What the control server needs from a running sandbox. */
export interface ControlBackend {
  /** Starts a process. A missing binary may fail here or exit with code 127. */
  spawn(argv: string[], options: BackendSpawnOptions): Promise<BackendProcess>;
  /** Reads up to `length` bytes at `offset`; fewer only at end of file. */
  readFile(path: string, range: { offset: number; length: number }): Promise<Uint8Array>;
  /**
   * Writes `data` at `offset` (creating the file). With `truncate`, the file is first cut to
   * `offset` bytes.
   */
  writeFile(
    path: string,
    data: Uint8Array,
    options: { offset: number; truncate: boolean; mode?: number },
  ): Promise<void>;
  /** Creates a directory. */
  mkdir(path: string, options: { recursive: boolean; mode?: number }): Promise<void>;
  /** Lists a directory. */
  readDir(path: string): Promise<BackendDirEntry[]>;
  /** Reads metadata (not following a final symlink when `lstat`). */
  stat(path: string, options: { lstat: boolean }): Promise<BackendStat>;
  /** Removes a file or directory. */
  remove(path: string, options: { recursive: boolean }): Promise<void>;
  /** Moves `oldPath` to `newPath` (replacing a file there). */
  rename(oldPath: string, newPath: string): Promise<void>;
  /** Copies a file (or a tree with `recursive`). */
  copy(src: string, dst: string, options: { recursive: boolean }): Promise<void>;
  /** Changes permission bits. */
  chmod(path: string, mode: number): Promise<void>;
  /** Watches a path for changes. */
  watch(path: string, options: { recursive: boolean }): Promise<BackendWatch>;
  /**
   * Saves the running sandbox's disk (with `memory`: and its memory and device state) as
   * checkpoint `name` (the supervisor provides it).
   */
  checkpoint?(name: string, options: { memory: boolean }): Promise<CheckpointReport>;
  /** The processes already running when the server starts (a resumed sandbox's). */
  adopt?(): Promise<AdoptedProcess[]>;
  /** Stops the sandbox (the supervisor provides it). */
  shutdown?(): Promise<void>;
  /** Facts for `initialize` (name, cpus, memory...). */
  info?(): Record<string, unknown>;
}
