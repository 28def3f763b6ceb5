// Validates an AsyncAPI document with the official parser (@asyncapi/parser); exits 1 on any error.
// Usage: PARSER_DIR=<node_modules holding @asyncapi/parser> node asyncapi_check.mjs <document.json>
import { createRequire } from "node:module";
const { Parser } = createRequire(process.env.PARSER_DIR + "/")("@asyncapi/parser");
import { readFileSync } from "node:fs";
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(process.argv[2], "utf8"));
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics.slice(0, 15)) console.log(d.severity, d.code, d.message, JSON.stringify(d.path));
console.log(`${diagnostics.length} diagnostics, ${errors.length} errors, document ${document ? "parsed" : "NOT parsed"}`);
process.exit(errors.length || !document ? 1 : 0);
