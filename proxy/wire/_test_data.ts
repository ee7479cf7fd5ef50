/**
 * Frames captured from the Linux 6.1 kernel and busybox through a TAP device (tests/_net_tap.ts),
 * guest 10.0.2.15, gateway 10.0.2.2, 2026-11-26. Real bytes for the wire tests, written like
 * `tcpdump -xx` output: 16 bytes per line, in hex.
 *
 * @module
 */

/** Decodes a hex dump (whitespace ignored). */
export function fromHex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** busybox udhcpc DHCPDISCOVER (broadcast, UDP 68 -> 67) (342 bytes). */
export const DHCP_DISCOVER: Uint8Array = fromHex(`
  ffff ffff ffff a218 cd0a 8b3a 0800 4500
  0148 0000 0000 4011 79a6 0000 0000 ffff
  ffff 0044 0043 0134 d7b6 0101 0600 afb4
  5913 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 a218 cd0a 8b3a 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 6382 5363 3501 0139 0202
  4037 0701 0306 0c0f 1c2a 3c0c 7564 6863
  7020 312e 3335 2e30 3d07 01a2 18cd 0a8b
  3aff 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000
`);

/** ARP who-has 10.0.2.2 tell 10.0.2.15 (42 bytes). */
export const ARP_REQUEST: Uint8Array = fromHex(`
  ffff ffff ffff a218 cd0a 8b3a 0806 0001
  0800 0604 0001 a218 cd0a 8b3a 0a00 020f
  0000 0000 0000 0a00 0202
`);

/** busybox ping 10.0.2.2: ICMP echo request, 56 data bytes (98 bytes). */
export const ICMP_ECHO_REQUEST: Uint8Array = fromHex(`
  5255 0a00 0202 a218 cd0a 8b3a 0800 4500
  0054 2166 4000 4001 0133 0a00 020f 0a00
  0202 0800 bd0d 145e 0000 9e7d 8816 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000 0000 0000 0000 0000 0000 0000 0000
  0000
`);

/** busybox nslookup example.test 10.0.2.3: DNS query, type A (72 bytes). */
export const DNS_QUERY_A: Uint8Array = fromHex(`
  5255 0a00 0202 a218 cd0a 8b3a 0800 4500
  003a 9b1c 4000 4011 8785 0a00 020f 0a00
  0203 ac74 0035 0026 77e9 8a76 0100 0001
  0000 0000 0000 0765 7861 6d70 6c65 0474
  6573 7400 0001 0001
`);

/** busybox nslookup example.test 10.0.2.3: DNS query, type AAAA (72 bytes). */
export const DNS_QUERY_AAAA: Uint8Array = fromHex(`
  5255 0a00 0202 a218 cd0a 8b3a 0800 4500
  003a 9b1d 4000 4011 8784 0a00 020f 0a00
  0203 ac74 0035 0026 57df aa65 0100 0001
  0000 0000 0000 0765 7861 6d70 6c65 0474
  6573 7400 001c 0001
`);

/** curl http://198.18.0.1:8080/: SYN with MSS 1460, SACK-permitted, timestamps, window scale 10 (74 bytes). */
export const TCP_SYN: Uint8Array = fromHex(`
  5255 0a00 0202 a218 cd0a 8b3a 0800 4500
  003c bf70 4000 4006 a929 0a00 020f c612
  0001 ea3e 1f90 4cf0 2990 0000 0000 a002
  faf0 abe7 0000 0204 05b4 0402 080a 5b3c
  f376 0000 0000 0103 030a
`);
