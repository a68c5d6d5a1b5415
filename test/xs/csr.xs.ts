// DER, certificate requests and certificate reading on XS; the request's bytes are emitted for comparison with Node.
import { emit, run, test } from "./harness.js";
import { csrCases, fixedKey, hex } from "../support/csr-cases.js";
import { certificateRequest } from "../../modules/csr.js";

for (const c of csrCases) {
  test(c.name, () => {
    const problem = c.run();
    if (problem) throw new Error(problem);
  });
}
test("csr bytes emitted", () => emit("csr", hex(certificateRequest("sensor-01", fixedKey))));

await run("csr");
