/**
 * Applies image layers, in order, with OCI semantics, to a root tree kept twice: in memory
 * (every node's type, owner, mode, xattrs, device numbers, and which layer last touched it) and
 * as a staging folder on the host holding the regular files' bytes, directories, symlinks and
 * hard links. Owners, modes, xattrs and device nodes are not applied on the host (that needs
 * root); `ext4.ts` writes them into the filesystem image from the memory tree. Staged files and
 * folders get their modes only at the end ({@linkcode stagedMode}), so they stay writable here.
 *
 * OCI layer rules (image-spec `layer.md`):
 * - `DIR/.wh.NAME` removes `DIR/NAME` (from lower layers); the whiteout itself is not kept.
 * - `DIR/.wh..wh..opq` makes `DIR` opaque: everything below it that this layer did not write
 *   is removed, wherever the marker appears among the layer's entries. Other `.wh..wh.*`
 *   names (aufs bookkeeping) are ignored.
 * - An entry replaces what is at its path (a directory over a directory only updates its
 *   metadata); a hard link names an earlier file of this or a lower layer.
 *
 * Safety: no host path is ever resolved through a symlink. A path with a `..` component, a
 * parent that is a symlink in the tree, or a hard link to something outside the tree is
 * refused (`unsafe_path`) before anything is written; absolute names are taken as relative to
 * the root, as containerd does. Sizes are checked before data is written: the live files
 * must fit `maxBytes` and the nodes `maxInodes` (`too_large`).
 *
 * @module
 */

import { join } from "node:path";
import { ImageError } from "./errors.ts";
import type { TarEntry, TarReader } from "../io/mod.ts";

/** Ownership, permissions and extended attributes of a node. */
export interface NodeMeta {
  /** Permission bits (07777). */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Modification time, seconds. */
  mtime: number;
  /** Extended attributes. */
  xattrs: Map<string, Uint8Array>;
}

/** A regular file's inode: shared by all its hard links. */
export interface FileInode {
  /** Metadata (the last entry naming the inode sets it). */
  meta: NodeMeta;
  /** Bytes. */
  size: number;
  /** Names in the tree. */
  links: number;
}

interface NodeBase {
  /** Index of the layer that created or replaced the node. */
  layer: number;
  /** The newest layer that wrote the node or anything below it. */
  touched: number;
}

/** A node of the root tree. */
export type TreeNode =
  | NodeBase & { kind: "dir"; meta: NodeMeta; children: Map<string, TreeNode> }
  | NodeBase & { kind: "file"; inode: FileInode }
  | NodeBase & { kind: "symlink"; meta: NodeMeta; target: string }
  | NodeBase & { kind: "char" | "block" | "fifo"; meta: NodeMeta; major: number; minor: number };

/** A directory node. */
export type DirNode = Extract<TreeNode, { kind: "dir" }>;

/** Limits of {@linkcode RootTree}. */
export interface TreeLimits {
  /** Largest total of live regular-file bytes (hard links counted once). */
  maxBytes: number;
  /** Most nodes (the filesystem's inodes). */
  maxInodes: number;
  /** Shown in `too_large` messages, e.g. "the 4096 MiB disk (--disk-size)". */
  diskLabel: string;
}

/** Files up to this size are written with one call, from memory. */
const WHOLE_FILE_BYTES = 1024 * 1024;
const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";
/** ext4's longest name component. */
const MAX_NAME_BYTES = 255;

function newMeta(mode: number): NodeMeta {
  return { mode, uid: 0, gid: 0, mtime: 0, xattrs: new Map() };
}

function metaOf(e: TarEntry): NodeMeta {
  return { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, xattrs: e.xattrs };
}

/** The permission bits a staged node gets on the host: readable and writable by us. */
export function stagedMode(kind: "dir" | "file", mode: number): number {
  return kind === "dir" ? (mode & 0o7777) | 0o700 : (mode & 0o7777) | 0o600;
}

const encoder = new TextEncoder();

/** See the module doc. */
export class RootTree {
  /** The root directory. */
  readonly root: DirNode;
  /** The host folder mirroring the tree. */
  readonly stageDir: string;
  readonly #limits: TreeLimits;
  #layer = 0;
  #what = "";
  #bytes = 0;
  #inodes = 1;

  private constructor(stageDir: string, limits: TreeLimits) {
    this.stageDir = stageDir;
    this.#limits = limits;
    this.root = { kind: "dir", meta: newMeta(0o755), children: new Map(), layer: 0, touched: 0 };
  }

  /** A tree over an empty staging folder `stageDir` (created). */
  static async create(stageDir: string, limits: TreeLimits): Promise<RootTree> {
    await Deno.mkdir(stageDir, { recursive: true });
    return new RootTree(stageDir, limits);
  }

  /** Live regular-file bytes (hard links once). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Nodes, the root included (an inode each; hard links share one). */
  get inodes(): number {
    return this.#inodes;
  }

  /**
   * Applies one layer's entries. `layer` numbers the layers from 1 up, in order; `what`
   * names the layer in messages.
   */
  async applyLayer(tar: TarReader, layer: number, what: string): Promise<void> {
    this.#layer = layer;
    this.#what = what;
    for (let e = await tar.next(); e; e = await tar.next()) await this.#apply(e, tar);
  }

  #fail(code: "unsafe_path" | "bad_layer" | "too_large", message: string): never {
    throw new ImageError(code, `Cannot unpack ${this.#what}: ${message}`);
  }

  /** Splits an archive path into checked components ([] for the root). */
  #split(raw: string, what: string): string[] {
    const parts: string[] = [];
    for (const part of raw.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") {
        this.#fail("unsafe_path", `${what} ${JSON.stringify(raw)} has a ".." component`);
      }
      if (part.includes("\0") || part.includes("\n")) {
        this.#fail("bad_layer", `${what} ${JSON.stringify(raw)} has a NUL or newline`);
      }
      if (encoder.encode(part).length > MAX_NAME_BYTES) {
        this.#fail("bad_layer", `${what} ${JSON.stringify(raw)} has a name over 255 bytes`);
      }
      parts.push(part);
    }
    return parts;
  }

  /** The directory holding `parts`' last component, creating missing parents. */
  #parent(parts: readonly string[], raw: string): DirNode {
    let dir = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i]!;
      const child = dir.children.get(name);
      if (child === undefined) {
        const made: DirNode = {
          kind: "dir",
          meta: newMeta(0o755),
          children: new Map(),
          layer: this.#layer,
          touched: this.#layer,
        };
        this.#count(0, 1);
        Deno.mkdirSync(this.#host(parts.slice(0, i + 1)));
        dir.children.set(name, made);
        dir = made;
      } else if (child.kind === "dir") {
        dir = child;
      } else if (child.kind === "symlink") {
        this.#fail(
          "unsafe_path",
          `${JSON.stringify(raw)} goes through /${parts.slice(0, i + 1).join("/")}, a symlink ` +
            `(to ${JSON.stringify(child.target)}); layers may not write through symlinks`,
        );
      } else {
        this.#fail(
          "bad_layer",
          `${JSON.stringify(raw)} needs /${parts.slice(0, i + 1).join("/")} to be a directory`,
        );
      }
    }
    return dir;
  }

  /** The existing node at `parts`, following no symlink. */
  #lookup(parts: readonly string[]): TreeNode | undefined {
    let node: TreeNode = this.root;
    for (const name of parts) {
      if (node.kind !== "dir") return undefined;
      const next: TreeNode | undefined = node.children.get(name);
      if (next === undefined) return undefined;
      node = next;
    }
    return node;
  }

  #host(parts: readonly string[]): string {
    return join(this.stageDir, ...parts);
  }

  #count(bytes: number, inodes: number): void {
    this.#bytes += bytes;
    this.#inodes += inodes;
    if (this.#bytes > this.#limits.maxBytes) {
      this.#fail(
        "too_large",
        `its files add up to more than ${this.#limits.diskLabel} can hold ` +
          `(${Math.ceil(this.#bytes / 1048576)} MiB so far)`,
      );
    }
    if (this.#inodes > this.#limits.maxInodes) {
      this.#fail(
        "too_large",
        `it has more files than ${this.#limits.diskLabel} has inodes (${this.#limits.maxInodes})`,
      );
    }
  }

  /** Marks `parts`' ancestors as touched by this layer. */
  #touch(parts: readonly string[]): void {
    let node: TreeNode = this.root;
    node.touched = this.#layer;
    for (const name of parts) {
      if (node.kind !== "dir") return;
      const next: TreeNode | undefined = node.children.get(name);
      if (next === undefined) return;
      next.touched = this.#layer;
      node = next;
    }
  }

  /** Removes `dir`'s child `name` (and everything below it), here and on the host. */
  #remove(dir: DirNode, name: string, parts: readonly string[]): void {
    const node = dir.children.get(name);
    if (node === undefined) return;
    dir.children.delete(name);
    this.#forget(node);
    if (node.kind === "dir" || node.kind === "file" || node.kind === "symlink") {
      Deno.removeSync(this.#host(parts), { recursive: true });
    }
  }

  /** Takes a removed node's bytes and inodes off the totals. */
  #forget(node: TreeNode): void {
    if (node.kind === "dir") {
      this.#inodes--;
      for (const child of node.children.values()) this.#forget(child);
    } else if (node.kind === "file") {
      if (--node.inode.links === 0) {
        this.#inodes--;
        this.#bytes -= node.inode.size;
      }
    } else {
      this.#inodes--;
    }
  }

  /** Opaque directory: drops everything below `dir` that this layer has not written. */
  #opaque(dir: DirNode, parts: readonly string[]): void {
    for (const [name, child] of [...dir.children]) {
      if (child.touched !== this.#layer) this.#remove(dir, name, [...parts, name]);
      else if (child.kind === "dir") this.#opaque(child, [...parts, name]);
    }
  }

  async #apply(e: TarEntry, tar: TarReader): Promise<void> {
    const parts = this.#split(e.path, "entry");
    if (parts.length === 0) {
      // The root itself ("./"): only its metadata.
      if (e.type === "dir") this.root.meta = metaOf(e);
      return;
    }
    const name = parts[parts.length - 1]!;
    if (name.startsWith(WHITEOUT)) {
      const dir = this.#parent(parts, e.path);
      const dirParts = parts.slice(0, -1);
      if (name === OPAQUE) this.#opaque(dir, dirParts);
      else if (!name.startsWith(WHITEOUT + WHITEOUT)) {
        const hidden = name.slice(WHITEOUT.length);
        if (hidden === "" || hidden === "." || hidden === "..") {
          this.#fail("bad_layer", `whiteout ${JSON.stringify(e.path)} names no file`);
        }
        this.#remove(dir, hidden, [...dirParts, hidden]);
      }
      return;
    }
    const dir = this.#parent(parts, e.path);
    const existing = dir.children.get(name);
    const host = this.#host(parts);
    const base = { layer: this.#layer, touched: this.#layer };

    if (e.type === "dir") {
      if (existing?.kind === "dir") {
        existing.meta = metaOf(e);
        existing.layer = this.#layer;
      } else {
        if (existing) this.#remove(dir, name, parts);
        this.#count(0, 1);
        Deno.mkdirSync(host);
        dir.children.set(name, { kind: "dir", meta: metaOf(e), children: new Map(), ...base });
      }
    } else if (e.type === "file") {
      if (existing) this.#remove(dir, name, parts);
      this.#count(e.size, 1);
      const inode: FileInode = { meta: metaOf(e), size: e.size, links: 1 };
      dir.children.set(name, { kind: "file", inode, ...base });
      if (e.size <= WHOLE_FILE_BYTES) {
        // Most files are small: one write call each (on these hosts the per-call costs of an
        // open file handle dominated the unpack of a Debian layer).
        const data = new Uint8Array(e.size);
        let at = 0;
        await tar.readData((chunk) => {
          data.set(chunk, at);
          at += chunk.length;
        });
        Deno.writeFileSync(host, data, { createNew: true, mode: 0o600 });
      } else {
        const file = Deno.openSync(host, { write: true, createNew: true, mode: 0o600 });
        try {
          await tar.readData((chunk) => {
            let off = 0;
            while (off < chunk.length) off += file.writeSync(chunk.subarray(off));
          });
        } finally {
          file.close();
        }
      }
    } else if (e.type === "symlink") {
      if (existing) this.#remove(dir, name, parts);
      this.#count(0, 1);
      Deno.symlinkSync(e.linkName, host);
      dir.children.set(name, { kind: "symlink", meta: metaOf(e), target: e.linkName, ...base });
    } else if (e.type === "hardlink") {
      const targetParts = this.#split(e.linkName, "hard link target");
      const target = this.#lookupLinkTarget(targetParts, e);
      if (target === existing) return this.#touch(parts);
      if (existing) this.#remove(dir, name, parts);
      if (target.kind === "file") {
        target.inode.links++;
        Deno.linkSync(this.#host(targetParts), host);
        dir.children.set(name, { kind: "file", inode: target.inode, ...base });
      } else if (target.kind === "symlink") {
        // A hard link to a symlink (GNU tar can write one): the same link, once more.
        this.#count(0, 1);
        Deno.symlinkSync(target.target, host);
        dir.children.set(name, { ...target, meta: { ...target.meta }, ...base });
      } else if (target.kind !== "dir") {
        this.#count(0, 1);
        dir.children.set(name, { ...target, meta: { ...target.meta }, ...base });
      }
    } else {
      if (existing) this.#remove(dir, name, parts);
      this.#count(0, 1);
      dir.children.set(name, {
        kind: e.type,
        meta: metaOf(e),
        major: e.devMajor,
        minor: e.devMinor,
        ...base,
      });
    }
    this.#touch(parts);
  }

  #lookupLinkTarget(targetParts: string[], e: TarEntry): TreeNode {
    // The target's parents must be real directories too (no link through a symlink).
    let node: TreeNode = this.root;
    for (let i = 0; i < targetParts.length; i++) {
      if (node.kind !== "dir") break;
      const next: TreeNode | undefined = node.children.get(targetParts[i]!);
      if (next === undefined) break;
      if (next.kind === "symlink" && i < targetParts.length - 1) {
        this.#fail(
          "unsafe_path",
          `hard link ${JSON.stringify(e.path)} points through a symlink ` +
            `(${JSON.stringify(e.linkName)})`,
        );
      }
      node = next;
      if (i === targetParts.length - 1) {
        if (node.kind === "dir") {
          this.#fail("bad_layer", `hard link ${JSON.stringify(e.path)} names a directory`);
        }
        return node;
      }
    }
    return this.#fail(
      "bad_layer",
      `hard link ${JSON.stringify(e.path)} names ${JSON.stringify(e.linkName)}, which the ` +
        "image does not have",
    );
  }

  /** Adds an empty directory at `path` (absolute in the image) unless something is there. */
  ensureDir(path: string, mode: number): void {
    const parts = this.#split(path, "directory");
    if (this.#lookup(parts)) return;
    const parent = this.#parent(parts, path);
    this.#count(0, 1);
    Deno.mkdirSync(this.#host(parts));
    parent.children.set(parts[parts.length - 1]!, {
      kind: "dir",
      meta: newMeta(mode),
      children: new Map(),
      layer: this.#layer,
      touched: this.#layer,
    });
  }

  /**
   * The bytes of the regular file at `path` (absolute in the image), following symlinks inside
   * the tree (at most 16), or `undefined` when there is none. For `/etc/passwd` and friends.
   */
  readFile(path: string, maxBytes = 1024 * 1024): Uint8Array | undefined {
    let parts = path.split("/").filter((p) => p !== "" && p !== ".");
    for (let hops = 0; hops <= 16; hops++) {
      let node: TreeNode = this.root;
      let i = 0;
      let redirected = false;
      for (; i < parts.length; i++) {
        const name = parts[i]!;
        if (name === "..") return undefined;
        if (node.kind !== "dir") return undefined;
        const next: TreeNode | undefined = node.children.get(name);
        if (next === undefined) return undefined;
        if (next.kind === "symlink") {
          const target = next.target.split("/").filter((p) => p !== "" && p !== ".");
          const resolved = next.target.startsWith("/") ? target : [...parts.slice(0, i), ...target];
          // `..` inside the tree: resolve lexically, clamped at the root.
          const clean: string[] = [];
          for (const p of [...resolved, ...parts.slice(i + 1)]) {
            if (p === "..") clean.pop();
            else clean.push(p);
          }
          parts = clean;
          redirected = true;
          break;
        }
        node = next;
      }
      if (redirected) continue;
      if (node.kind !== "file" || node.inode.size > maxBytes) return undefined;
      return Deno.readFileSync(this.#host(parts));
    }
    return undefined;
  }
}
