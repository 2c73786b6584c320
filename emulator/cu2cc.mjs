#!/usr/bin/env node
// Turns a .cu file into host C++ for the emulated CUDA build, changing only the two
// constructs C++ cannot express, on the lines where they stand (so file:line in the
// emulator's reports point at the .cu source):
//   kernel<T><<<grid, block[, shared[, stream]]>>>(args)  →  ::emu::launch(kernel<T>, "kernel<T>", grid, block...)(args)
//   __shared__ T a[n], b;                                   →  auto& a = ::emu::shared<T[n]>(site); auto& b = ...
// Shared variables become per-block storage that the emulator poisons for each block,
// which plain `static` variables could not be.
// Usage: node cu2cc.mjs input.cu output.cc
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: cu2cc.mjs input.cu output.cc');
  process.exit(2);
}
let src = readFileSync(input, 'utf8');

// The launched expression ends right before `<<<`: an identifier, optionally qualified,
// optionally followed by balanced template arguments.
function kernelStart(text, end) {
  let i = end;
  while (i > 0 && /\s/.test(text[i - 1])) i--;
  if (text[i - 1] === '>') {
    let depth = 0;
    for (i = i - 1; i >= 0; i--) {
      if (text[i] === '>') depth++;
      else if (text[i] === '<' && --depth === 0) break;
    }
  }
  while (i > 0 && /[\w:]/.test(text[i - 1])) i--;
  return i;
}

let out = '';
for (;;) {
  const open = src.indexOf('<<<');
  if (open < 0) break;
  const close = src.indexOf('>>>', open);
  if (close < 0) throw new Error(`${input}: unterminated <<< launch`);
  const start = kernelStart(src, open);
  const kernel = src.slice(start, open).trim();
  const config = src.slice(open + 3, close);
  out += src.slice(0, start) + `::emu::launch(${kernel}, ${JSON.stringify(kernel)}, ${config})`;
  src = src.slice(close + 3);
}
src = out + src;

// Splits at top-level commas (not inside brackets or parentheses).
function splitTop(s) {
  const parts = [];
  let depth = 0, last = 0;
  for (let i = 0; i < s.length; i++) {
    if ('[(<'.includes(s[i])) depth++;
    else if ('])>'.includes(s[i])) depth--;
    else if (s[i] === ',' && depth === 0) { parts.push(s.slice(last, i)); last = i + 1; }
  }
  parts.push(s.slice(last));
  return parts.map((p) => p.trim());
}

src = src.replace(/__shared__\s+([^;]*);/g, (whole, body, offset) => {
  if (/^extern\b/.test(body) || /\bextern\b/.test(src.slice(Math.max(0, offset - 8), offset)))
    throw new Error(`${input}: dynamic (extern) shared memory is not supported by the emulator`);
  const declarators = splitTop(body);
  const first = declarators[0].match(/^(.*?)\s*\b([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$/);
  if (!first) throw new Error(`${input}: cannot parse shared declaration '${whole}'`);
  const type = first[1];
  const decls = [[first[2], first[3]], ...declarators.slice(1).map((d) => {
    const m = d.match(/^([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$/);
    if (!m) throw new Error(`${input}: cannot parse shared declarator '${d}'`);
    return [m[1], m[2]];
  })];
  const newlines = (whole.match(/\n/g) ?? []).length;
  return decls.map(([name, dims]) => `auto& ${name} = ::emu::shared<${type}${dims.replace(/\s+/g, '')}>(EMU_SITE ":${name}");`).join(' ') + '\n'.repeat(newlines);
});

// Sites read as kernels/<op>.cu:<line>, relative to the project root.
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
writeFileSync(output, `#line 1 ${JSON.stringify(relative(root, resolve(input)))}\n${src}`);
