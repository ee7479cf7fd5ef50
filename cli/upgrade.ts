/**
 * `shuru upgrade`: updates the git checkout shuru runs from (how it is installed today):
 * fetch the branch's upstream, fast-forward, reinstall the npm dependencies when
 * `package.json` or `package-lock.json` changed (`npm ci`), and rebuild the guest assets only
 * when their version changed (the new code's `shuru init` decides: it builds nothing when its
 * version folder exists). It prints old → new version and what it did; `--check` only reports.
 *
 * Refused with one line: not a git checkout, local changes to tracked files, a detached HEAD or
 * a branch without upstream, a branch that has diverged from its upstream.
 *
 * @module
 */

import { Command } from "@commander-js/extra-typings";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { ensureAssets } from "../assets/mod.ts";
import { UserError } from "./errors.ts";
import { homeLayout, VERSION } from "../host/mod.ts";

/** The checkout this code runs from. */
const CHECKOUT = fileURLToPath(new URL("..", import.meta.url));

/** Files whose change means `npm ci`. */
const NPM_FILES = ["package.json", "package-lock.json"];
/** Folders whose change may change the guest assets' version (the agent's graph, the builder). */
const ASSET_PATHS = ["guest", "proto", "ffi", "io", "assets"];

async function git(args: string[], cwd: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("git", {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UserError("Cannot upgrade: git is not installed (apt-get install git)");
    }
    throw err;
  }
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    throw new UserError(`Cannot upgrade: git ${args[0]} failed: ${why}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** The shuru version in the checkout at `rev` (read from its version module). */
async function versionAt(rev: string, cwd: string): Promise<string> {
  for (const path of ["cli/version.ts", "host/version.ts"]) {
    const text = await git(["show", `${rev}:${path}`], cwd).catch(() => "");
    const v = /export const VERSION = "([^"]+)"/.exec(text)?.[1];
    if (v) return v;
  }
  return "?";
}

/** What an upgrade found (and did). */
export interface UpgradeReport {
  /** The checkout. */
  checkout: string;
  /** The upstream branch (`origin/main`). */
  upstream: string;
  /** Version and commit before. */
  from: { version: string; commit: string };
  /** Version and commit of the upstream. */
  to: { version: string; commit: string };
  /** Upstream commits not in the checkout before. */
  behind: number;
  /** Local commits not upstream. */
  ahead: number;
  /** `true` when the checkout was fast-forwarded (not with `--check`). */
  upgraded: boolean;
  /** `reinstalled`, `unchanged`, or with `--check` `would reinstall`. */
  npm: "reinstalled" | "unchanged" | "would reinstall";
  /** The guest assets: versions before and after, and whether they were rebuilt. */
  assets: { from: string; to?: string; rebuilt: boolean; mayChange?: boolean };
}

async function checkoutState(cwd: string) {
  const inside = await git(["rev-parse", "--is-inside-work-tree"], cwd).catch(() => "");
  if (inside !== "true") {
    throw new UserError(
      `Cannot upgrade: ${cwd} is not a git checkout (shuru upgrade updates a git clone of shuru)`,
    );
  }
  const root = await git(["rev-parse", "--show-toplevel"], cwd);
  const branch = await git(["rev-parse", "--abbrev-ref", "HEAD"], root);
  if (branch === "HEAD") {
    throw new UserError(
      "Cannot upgrade: the checkout is on a detached HEAD (check out a branch first)",
    );
  }
  const dirty = await git(["status", "--porcelain", "--untracked-files=no"], root);
  if (dirty !== "") {
    // Porcelain lines are "XY PATH"; the trimmed output may have lost the first line's X.
    const files = dirty.split("\n").map((l) => l.replace(/^\s*\S+\s+/, "")).slice(0, 3).join(", ");
    throw new UserError(
      `Cannot upgrade: the checkout has local changes (${files}${
        dirty.split("\n").length > 3 ? ", ..." : ""
      }); commit or stash them first`,
    );
  }
  const upstream = await git(
    ["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"],
    root,
  ).catch(() => "");
  if (upstream === "") {
    throw new UserError(
      `Cannot upgrade: branch ${branch} has no upstream (git branch --set-upstream-to ` +
        "origin/main)",
    );
  }
  return { root, branch, upstream };
}

/** Runs the upgrade (or only the check); see the module doc. */
export async function upgrade(
  options: { check?: boolean; onLine?: (line: string) => void } = {},
): Promise<UpgradeReport> {
  const line = options.onLine ?? (() => {});
  const { root, branch, upstream } = await checkoutState(CHECKOUT);
  const remote = upstream.split("/")[0]!;
  await git(["fetch", "--quiet", remote], root);
  const [aheadText, behindText] = (await git(
    ["rev-list", "--left-right", "--count", `HEAD...${upstream}`],
    root,
  )).split(/\s+/);
  const ahead = Number(aheadText);
  const behind = Number(behindText);
  if (ahead > 0 && behind > 0) {
    throw new UserError(
      `Cannot upgrade: ${branch} and ${upstream} have diverged (${ahead} local and ${behind} ` +
        "upstream commits); rebase or reset the branch first",
    );
  }
  const oldCommit = await git(["rev-parse", "--short", "HEAD"], root);
  const newCommit = await git(["rev-parse", "--short", upstream], root);
  const changed = behind === 0
    ? []
    : (await git(["diff", "--name-only", "HEAD", upstream], root)).split("\n").filter(Boolean);
  const npmChanged = changed.some((f) => NPM_FILES.includes(f));
  const assetFiles = changed.filter((f) => ASSET_PATHS.some((p) => f.startsWith(`${p}/`)));
  const before = await ensureAssets({ assetsDir: homeLayout().assets, checkOnly: true })
    .then((a) => a.version, () => "?");
  const report: UpgradeReport = {
    checkout: root,
    upstream,
    from: { version: VERSION, commit: oldCommit },
    to: { version: behind === 0 ? VERSION : await versionAt(upstream, root), commit: newCommit },
    behind,
    ahead,
    upgraded: false,
    npm: npmChanged ? "would reinstall" : "unchanged",
    assets: { from: before, rebuilt: false, mayChange: assetFiles.length > 0 },
  };
  if (options.check || behind === 0) return report;

  line(`shuru: fast-forwarding ${branch} to ${upstream} (${behind} commits)`);
  await git(["merge", "--ff-only", "--quiet", upstream], root);
  report.upgraded = true;
  if (npmChanged) {
    line("shuru: reinstalling npm dependencies (npm ci)");
    const npm = await new Deno.Command("npm", {
      args: ["ci", "--no-audit", "--no-fund", "--loglevel=error"],
      cwd: root,
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).output().catch((err) => {
      throw new UserError(`Cannot reinstall the npm dependencies: ${(err as Error).message}`);
    });
    if (!npm.success) {
      throw new UserError(
        `Cannot reinstall the npm dependencies: npm ci exited with ${npm.code} (the checkout is ` +
          `at ${newCommit}; run \`npm ci\` in ${root} again)`,
      );
    }
    report.npm = "reinstalled";
  }
  // The new code decides whether its assets exist; it builds only a missing version.
  line("shuru: checking the guest assets with the new version");
  const init = await new Deno.Command(join(root, "shuru"), {
    args: ["init", "--json"],
    cwd: root,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!init.success) {
    throw new UserError(
      `Cannot rebuild the guest assets: shuru init exited with ${init.code} (the checkout is at ` +
        `${newCommit}; run \`shuru init\` again)`,
    );
  }
  const after = JSON.parse(new TextDecoder().decode(init.stdout)) as {
    version: string;
    built: boolean;
  };
  report.assets = { from: before, to: after.version, rebuilt: after.built };
  delete report.assets.mayChange;
  return report;
}

/** The report as lines for a person. */
export function describeUpgrade(r: UpgradeReport, check: boolean): string[] {
  const from = `${r.from.version} (${r.from.commit})`;
  const to = `${r.to.version} (${r.to.commit})`;
  if (r.behind === 0) {
    return [
      `shuru ${from} is up to date with ${r.upstream}` +
      (r.ahead > 0 ? ` (${r.ahead} local commits not upstream)` : ""),
    ];
  }
  if (check) {
    return [
      `shuru ${from} → ${to} is available: ${r.behind} commits on ${r.upstream} ` +
      "(run `shuru upgrade`)",
      `npm dependencies: ${r.npm === "unchanged" ? "unchanged" : "would be reinstalled (npm ci)"}`,
      `guest assets: ${
        r.assets.mayChange
          ? `may be rebuilt (now ${r.assets.from})`
          : `unchanged (${r.assets.from})`
      }`,
    ];
  }
  return [
    `shuru ${from} → ${to}: ${r.behind} commits from ${r.upstream}`,
    `npm dependencies: ${r.npm === "reinstalled" ? "reinstalled (npm ci)" : "unchanged"}`,
    r.assets.rebuilt
      ? `guest assets: rebuilt, ${r.assets.from} → ${r.assets.to}`
      : `guest assets: unchanged (${r.assets.to ?? r.assets.from})`,
  ];
}

/** Builds `shuru upgrade`. */
export function upgradeCommand(): Command {
  return new Command("upgrade")
    .description(
      "Update this git checkout of shuru: fetch its upstream branch, fast-forward, reinstall " +
        "the npm dependencies when they changed (npm ci), and rebuild the guest assets only " +
        "when their version changed. Prints old → new version and what it did. Refuses local " +
        "changes and a branch that has diverged from its upstream.",
    )
    .option("--check", "only report whether an upgrade is available and what it would do")
    .option("--json", "print the report as JSON")
    .action(async (opts) => {
      const report = await upgrade({
        ...(opts.check ? { check: true } : {}),
        onLine: (l) => console.error(l),
      });
      if (opts.json) console.log(JSON.stringify(report));
      else for (const l of describeUpgrade(report, opts.check === true)) console.log(l);
    }) as unknown as Command;
}
