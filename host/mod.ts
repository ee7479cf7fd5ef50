/**
 * The host process's environment, below everything that uses it: where shuru keeps its data
 * (the data home's layout), shuru's version, the host programs shuru runs (and the Debian
 * packages that provide them), the guest architectures by name and the host's, and process
 * liveness that survives pid reuse.
 *
 * Nothing here knows about guests, disks or protocols.
 *
 * @module
 */

export {
  CONTROL_SOCKET_NAME,
  dataHome,
  type HomeLayout,
  homeLayout,
  makeHomePrivate,
  type MakeHomePrivateOptions,
  sandboxControlSocket,
} from "./home.ts";
export { VERSION, versionText } from "./version.ts";
export { NAME_LIMITS, type NameKind, nameProblem } from "./names.ts";
export { HostError, type HostErrorCode } from "./errors.ts";
export {
  aptInstallLine,
  ASSET_TOOLS,
  findCommand,
  findMissingTools,
  type HostTool,
  type InstallOptions,
  installPackages,
  isStaticElf,
  type MissingPackage,
  missingPackagesError,
  type MissingTool,
  missingToolsError,
  NON_ROOT_TOOLS,
  packagesOf,
  qemuSystemTool,
  shouldInstallPackages,
  vmTools,
} from "./tools.ts";
export {
  archFromUname,
  GUEST_ARCHES,
  type GuestArch,
  hostArch,
  ociArch,
  parseArch,
} from "./arch.ts";
export {
  processAlive,
  type ProcessId,
  processId,
  processStartTime,
  type ProcessStartTimeOptions,
  selfProcessId,
} from "./process.ts";
