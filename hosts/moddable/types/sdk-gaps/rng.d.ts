/** The TLS stack's `rng` module, which the SDK's own typings leave undeclared (see tls.d.ts). */
declare const RNG: { get(count: number): ArrayBuffer };
export default RNG;
