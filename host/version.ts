/** The shuru version, printed by `shuru --version`. */
export const VERSION = "0.1.0";
