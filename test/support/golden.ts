/**
 * The exact command logs of every transcript, pinned in test/transcripts/*.golden.json. The Node
 * tests compare against them line by line; after a deliberate change in behaviour, regenerate with
 * `node build/test/support/golden.js --write` and review the diff like code.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { transcripts } from "../transcripts/registration.js";
import { hubTranscripts, runHubTranscript } from "../transcripts/hub.js";
import { lifecycleTranscripts, runLifecycleTranscript } from "../transcripts/lifecycle.js";
import { featureTranscripts, runFeatureTranscript } from "../transcripts/features.js";
import { runTranscript } from "./transcript.js";
import { projectRoot } from "./xs.js";

export const goldenFiles = {
  registration: join(projectRoot, "test", "transcripts", "registration.golden.json"),
  hub: join(projectRoot, "test", "transcripts", "hub.golden.json"),
  lifecycle: join(projectRoot, "test", "transcripts", "lifecycle.golden.json"),
  features: join(projectRoot, "test", "transcripts", "features.golden.json"),
};

/** The feature transcripts run through promises (asynchronous method handlers). */
export async function currentFeatureLogs(): Promise<Record<string, string[]>> {
  const features: Record<string, string[]> = {};
  for (const t of featureTranscripts) features[t.name] = await runFeatureTranscript(t);
  return features;
}

export function currentLogs(): { registration: Record<string, string[]>; hub: Record<string, string[]>; lifecycle: Record<string, string[]> } {
  const registration: Record<string, string[]> = {};
  for (const t of transcripts) registration[t.name] = runTranscript(t).log;
  const hub: Record<string, string[]> = {};
  for (const t of hubTranscripts) hub[t.name] = runHubTranscript(t);
  const lifecycle: Record<string, string[]> = {};
  for (const t of lifecycleTranscripts) lifecycle[t.name] = runLifecycleTranscript(t).log;
  return { registration, hub, lifecycle };
}

export function readGolden(which: keyof typeof goldenFiles): Record<string, string[]> {
  return JSON.parse(readFileSync(goldenFiles[which], "utf8")) as Record<string, string[]>;
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes("--write")) {
  const logs = currentLogs();
  writeFileSync(goldenFiles.registration, JSON.stringify(logs.registration, null, 1) + "\n");
  writeFileSync(goldenFiles.hub, JSON.stringify(logs.hub, null, 1) + "\n");
  writeFileSync(goldenFiles.lifecycle, JSON.stringify(logs.lifecycle, null, 1) + "\n");
  writeFileSync(goldenFiles.features, JSON.stringify(await currentFeatureLogs(), null, 1) + "\n");
  process.stdout.write(`wrote ${Object.keys(logs.registration).length} + ${Object.keys(logs.hub).length} + ${Object.keys(logs.lifecycle).length} transcripts\n`);
}
