// Independent check of schemas/vectors/content_hash.json in JavaScript: recursively key-sorted
// JSON.stringify (which is RFC 8785 for this data) and SHA-256. Prints one line per vector and
// exits 1 on any mismatch. Usage: node content_hash_check.mjs <vectors.json>
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

const sortKeys = (value) => {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
};

const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const v of doc.vectors) {
  const payload = Object.fromEntries(
    Object.entries(v.payload).filter(([k]) => !doc.volatile_payload_keys.includes(k)));
  const canonical = JSON.stringify(sortKeys({ event_type: v.event_type, payload }));
  const hash = createHash("sha256").update(canonical, "utf8").digest("hex");
  const ok = hash === v.content_hash && canonical === v.canonical_json;
  if (!ok) failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${v.name}${ok ? "" : `\n  got  ${canonical}\n  want ${v.canonical_json}`}`);
}
console.log(`${doc.vectors.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
