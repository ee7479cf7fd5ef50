/**
 * DNS for the guest: message codec and the sans-I/O server logic.
 *
 * @module
 */

export * from "./message.ts";
export * from "./server.ts";
export * from "./name.ts";
