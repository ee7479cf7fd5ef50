/**
 * The image config's `User`, resolved against the image's own `/etc/passwd` and `/etc/group`
 * the way runc does: `name`, `uid`, `name:group`, `uid:gid` (and mixes); a name must exist, a
 * number need not; the primary group is the user's unless given; supplementary groups are the
 * groups that list the user; `HOME` is the user's home (`/` when unknown).
 *
 * @module
 */

import { ImageError } from "./errors.ts";

/** A resolved user. */
export interface ImageUser {
  /** `User` as the config wrote it. */
  spec: string;
  /** User id. */
  uid: number;
  /** Primary group id. */
  gid: number;
  /** Supplementary group ids (without the primary one). */
  groups: number[];
  /** Home folder. */
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const ID_RE = /^\d{1,10}$/;

/** Parses `/etc/passwd` text; malformed lines are skipped, as libc does. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || !ID_RE.test(f[2]!) || !ID_RE.test(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

/** Parses `/etc/group` text; malformed lines are skipped. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 4 || !ID_RE.test(f[2]!)) continue;
    out.push({ name: f[0]!, gid: Number(f[2]), members: f[3]!.split(",").filter(Boolean) });
  }
  return out;
}

/**
 * Resolves `spec` with the image's passwd and group files (`undefined` when absent).
 *
 * @throws {ImageError} `bad_manifest` when a named user or group does not exist, or an id is out
 * of range.
 */
export function resolveUser(
  spec: string,
  files: { passwd?: string; group?: string },
  image: string,
): ImageUser {
  const passwd = parsePasswd(files.passwd ?? "");
  const groups = parseGroup(files.group ?? "");
  const [userPart, groupPart] = spec.split(":", 2) as [string, string | undefined];
  const fail = (why: string): never => {
    throw new ImageError(
      "bad_manifest",
      `Cannot use ${image}: its User ${JSON.stringify(spec)} ${why}`,
    );
  };
  const id = (text: string) => {
    const n = Number(text);
    if (n > 0xfffffffe) fail(`has an id past 4294967294`);
    return n;
  };
  let entry: PasswdEntry | undefined;
  let uid: number;
  if (ID_RE.test(userPart)) {
    uid = id(userPart);
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === userPart);
    if (!entry) return fail(`names a user the image's /etc/passwd does not have`);
    uid = entry.uid;
  }
  let gid = entry?.gid ?? 0;
  if (groupPart !== undefined && groupPart !== "") {
    if (ID_RE.test(groupPart)) gid = id(groupPart);
    else {
      const g = groups.find((x) => x.name === groupPart);
      if (!g) return fail(`names a group the image's /etc/group does not have`);
      gid = g.gid;
    }
  }
  const supplementary = entry && groupPart === undefined
    ? groups.filter((g) => g.members.includes(entry.name) && g.gid !== gid).map((g) => g.gid)
    : [];
  return {
    spec,
    uid,
    gid,
    groups: [...new Set(supplementary)],
    home: entry?.home || "/",
  };
}
