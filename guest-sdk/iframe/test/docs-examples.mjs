// Type-checks every `ts` example of the docs against the SDK's published types (dist/index.d.ts),
// as an extension author's strict TypeScript project would compile it. Names an example uses
// without defining them (the page's own functions) are declared in PRELUDE; an example that
// uses a new one fails here until it is declared. Run from the Rust test iframe_sdk.rs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../..");
const sdk = resolve(here, "../dist/index.js");
const DOCS = ["docs/guide.md", "docs/rest.md"];

const PRELUDE = `
declare const API_BASE: string;
declare function requestTokenFromHostPage(): Promise<string>;
declare function askHostPage(): Promise<string>;
declare function showFull(quota: string, limit: number, usage: number): void;
declare function render(entries: unknown[]): void;
`;

const dir = mkdtempSync(join(tmpdir(), "alga-docs-ts-"));
try {
  const files = [];
  for (const doc of DOCS) {
    const text = readFileSync(join(root, doc), "utf8");
    let index = 0;
    for (const match of text.matchAll(/```ts\n([\s\S]*?)```/g)) {
      const line = text.slice(0, match.index).split("\n").length + 1;
      const body = match[1].replaceAll('"@alga/storage-iframe"', JSON.stringify(sdk));
      const file = join(dir, `${doc.replace(/\W/g, "_")}_${index++}.ts`);
      // The example's own lines first, so the diagnostics' line numbers map back to the doc.
      writeFileSync(file, `${body}\n${PRELUDE}\nexport {};\n`);
      files.push({ file, doc, line });
    }
  }
  if (files.length === 0) throw new Error(`no ts examples found in ${DOCS.join(", ")}`);
  const program = ts.createProgram(
    files.map((f) => f.file),
    {
      noEmit: true,
      strict: true,
      exactOptionalPropertyTypes: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ES2022,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
    },
  );
  const problems = ts.getPreEmitDiagnostics(program).map((d) => {
    const source = files.find((f) => f.file === d.file?.fileName);
    const at = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : 0;
    const where = source ? `${source.doc}:${source.line + at}` : "(options)";
    return `${where}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
  });
  if (problems.length > 0) {
    console.error(problems.join("\n"));
    process.exitCode = 1;
  } else {
    console.log(`${files.length} examples type-check`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
