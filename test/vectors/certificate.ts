/**
 * A self-signed ECC P-256 certificate made with openssl (req -x509, subject O=Example, CN=sensor-01,
 * 30 days), and what modules/csr.ts's readCertificate must read from it, on Node and on XS.
 */
export const certificateVector = {
  base64: "MIIBjjCCATSgAwIBAgIBBzAKBggqhkjOPQQDAjAmMRAwDgYDVQQKDAdFeGFtcGxlMRIwEAYDVQQDDAlzZW5zb3ItMDEwHhcNMjYxMjAyMTUzNjU4WhcNMjcwMTAxMTUzNjU4WjAmMRAwDgYDVQQKDAdFeGFtcGxlMRIwEAYDVQQDDAlzZW5zb3ItMDEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASKb6NqcYXxvfc2JpMsexebtovn4DubU4CoZm6rd0+1jMpbeRnVFmq1PbQjXqCi5A0RwAiojhd/IiUhBqV8DZO5o1MwUTAdBgNVHQ4EFgQU1bQNfhbiF/S4qd/OTZo+81ijokUwHwYDVR0jBBgwFoAU1bQNfhbiF/S4qd/OTZo+81ijokUwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAs1wV+3lewCdpIUpaAUVDmys0rbdjgseHqg4iQWnmDxECIFJsUsiHaH+i7NGjx+xWOnsaMvbasXCP2Vhi1Jo8kXv0",
  subjectCommonName: "sensor-01",
  issuerCommonName: "sensor-01",
  notBefore: 1796225818000,
  notAfter: 1798817818000,
} as const;

/** A fixed stand-in key (not a real point's private half): the CSR bytes are the same on Node and XS. */
export const fixedKeyPoint = Uint8Array.from({ length: 65 }, (_, i) => (i === 0 ? 4 : (i * 37 + 11) & 0xff));
/** A DER ECDSA-Sig-Value with r and s of 32 bytes each, fixed. */
export const fixedSignature = Uint8Array.from([0x30, 0x44, 0x02, 0x20, ...Array.from({ length: 32 }, (_, i) => (i + 1) & 0x7f), 0x02, 0x20, ...Array.from({ length: 32 }, (_, i) => (90 - i) & 0x7f)]);
