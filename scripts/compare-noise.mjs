#!/usr/bin/env node
// How much of a comparison's uncertainty the held-out set's size causes. For each loss
// against the baseline, seed by seed, the final evals of the two runs score the same
// prompts; the prompts where exactly one of them is right (the discordant ones) give the
// sampling variance of that seed's difference, (n01 + n10 − n·d²)/n², as for a paired
// (McNemar) comparison. Averaged over the seeds this is the part of the interval that a
// larger eval set would shrink; the rest is run-to-run variation of training itself.
//
//   node scripts/compare-noise.mjs runs/compare-<time>
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) throw new Error('usage: node scripts/compare-noise.mjs <compare directory>');
const summary = JSON.parse(readFileSync(join(dir, 'compare.json'), 'utf8'));
const baseline = summary.baseline ?? 'grpo';

function finalEval(run) {
  const samples = join(run, 'samples');
  const last = readdirSync(samples).filter((f) => f.startsWith('eval-step-')).sort().at(-1);
  return readFileSync(join(samples, last), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

const base = summary.rows.find((r) => r.loss === baseline);
if (!base) throw new Error(`${dir}: no ${baseline} runs to compare with`);
console.log(`loss      seeds  eval items  final − ${baseline} (95% over seeds)  of which the eval set (±, normal)  eval items for ±0.03 from the eval set alone`);
for (const row of summary.rows) {
  if (row.loss === baseline) continue;
  let variance = 0, seeds = 0, n = 0;
  row.seeds.forEach((seed, i) => {
    const j = base.seeds.indexOf(seed);
    if (j < 0) return;
    const a = finalEval(row.runs[i]), b = finalEval(base.runs[j]);
    if (a.length !== b.length || a.some((x, k) => x.prompt !== b[k].prompt)) throw new Error(`seed ${seed}: the two runs were not evaluated on the same prompts`);
    n = a.length;
    let n01 = 0, n10 = 0;
    a.forEach((x, k) => {
      if (x.correct && !b[k].correct) n10++;
      if (!x.correct && b[k].correct) n01++;
    });
    const d = (n10 - n01) / n;
    variance += (n01 + n10 - n * d * d) / (n * n);
    seeds++;
  });
  const half = 1.96 * Math.sqrt(variance) / seeds;
  const needed = Math.ceil(n * (half / 0.03) ** 2);
  const diff = row.finalVsBaseline;
  console.log(`${row.loss.padEnd(8)}  ${String(seeds).padEnd(5)}  ${String(n).padEnd(10)}  ${`${diff.mean >= 0 ? '+' : ''}${diff.mean.toFixed(3)} ± ${diff.half.toFixed(3)}`.padEnd(32)}  ±${half.toFixed(3)}${' '.repeat(34)}${needed}`);
}
