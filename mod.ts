/**
 * shuru: a local-first microVM sandbox for AI agents.
 *
 * This module is the TypeScript SDK. It grows with the sandbox API.
 *
 * @module
 */

export { VERSION } from "./cli/version.ts";
