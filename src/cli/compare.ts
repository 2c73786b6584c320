// `lgrpo-native compare`: the same task and seeds under several aggregations (GRPO, DAPO,
// Dr. GRPO, λ-GRPO), one full run each, then a table of final held-out accuracy (mean ±
// sample std over seeds), final mean length and final λ, and one report overlaying every run.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { LOSSES, trainOptions } from '../train/config.js';

type CompareArgs = Record<string, unknown> & { losses: string; seeds: number; out?: string };

export interface CompareRow {
  loss: string;
  seeds: number[];
  /** Final held-out accuracy per seed. */
  accuracy: number[];
  /** Held-out accuracy at step 0 per seed (after the warm-up, before RL). */
  startAccuracy: number[];
  meanLength: number[];
  /** Final λ per seed ('lambda' only). */
  lambda: number[] | null;
  runs: string[];
}

function meanStd(values: number[]): { mean: number; std: number } {
  const m = values.reduce((a, b) => a + b, 0) / values.length;
  const v = values.length > 1 ? values.reduce((a, b) => a + (b - m) ** 2, 0) / (values.length - 1) : 0;
  return { mean: m, std: Math.sqrt(v) };
}

function cell(values: number[] | null, digits: number): string {
  if (values === null || values.length === 0) return '—';
  const { mean, std } = meanStd(values);
  return values.length > 1 ? `${mean.toFixed(digits)} ± ${std.toFixed(digits)}` : mean.toFixed(digits);
}

/** A plain-text table, columns padded. */
export function formatCompareTable(rows: CompareRow[]): string {
  const header = ['loss', 'final accuracy', 'step-0 accuracy', 'mean length', 'final λ'];
  const body = rows.map((r) => [r.loss, cell(r.accuracy, 3), cell(r.startAccuracy, 3), cell(r.meanLength, 1), cell(r.lambda, 4)]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

export const compareCommand: CommandModule<object, CompareArgs> = {
  command: 'compare',
  describe: 'Train under several losses with the same seeds; print a table and write one overlaid report',
  builder: (y: Argv) =>
    trainOptions(y, ['loss', 'out', 'resume'])
      .option('losses', {
        type: 'string', default: LOSSES.join(','), requiresArg: true, group: 'Compare:',
        describe: `comma-separated losses to compare (${LOSSES.join(', ')})`,
      })
      .option('seeds', { type: 'number', default: 3, requiresArg: true, group: 'Compare:', describe: 'runs per loss, seeds --seed, --seed + 1, …' })
      .option('out', {
        type: 'string', requiresArg: true, group: 'Compare:', defaultDescription: 'runs/compare-<time>',
        describe: 'directory of the comparison: one run directory per loss and seed, compare.json, report.html',
      })
      .example('$0 compare --steps 20 --seeds 2', 'a quick comparison of the four losses') as unknown as Argv<CompareArgs>,
  handler: async (args: ArgumentsCamelCase<CompareArgs>) => {
    const { join, resolve } = await import('node:path');
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const { resolveConfig, ConfigError } = await import('../train/config.js');
    const { train } = await import('../train/trainer.js');
    const { loadRun, writeReport } = await import('../train/report.js');
    const { interruptSignal } = await import('./train.js');

    const losses = String(args.losses).split(',').map((s) => s.trim()).filter(Boolean);
    const bad = losses.filter((l) => !(LOSSES as readonly string[]).includes(l));
    if (losses.length === 0 || bad.length) throw new Error(`--losses: expected a comma-separated subset of ${LOSSES.join(', ')}, got ${JSON.stringify(args.losses)}`);
    if (new Set(losses).size !== losses.length) throw new Error(`--losses: ${JSON.stringify(args.losses)} names a loss twice`);
    if (!Number.isSafeInteger(args.seeds) || args.seeds < 1) throw new Error(`--seeds: expected an integer >= 1, got ${args.seeds}`);
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    const out = resolve(args.out ?? join('runs', `compare-${stamp}`));
    const baseSeed = (args.seed as number | undefined) ?? 0;
    const seeds = Array.from({ length: args.seeds }, (_, i) => baseSeed + i);

    // Every configuration is resolved (and so validated) before the first run starts.
    const plans: Array<{ loss: string; seed: number; dir: string; config: ReturnType<typeof resolveConfig>['config'] }> = [];
    const warnings = new Set<string>();
    const problems: string[] = [];
    for (const loss of losses)
      for (const seed of seeds) {
        const dir = join(out, `${loss}-seed${seed}`);
        try {
          const r = resolveConfig({ ...args, loss, seed, out: dir, losses: undefined, seeds: undefined });
          r.warnings.forEach((w) => warnings.add(w));
          plans.push({ loss, seed, dir, config: r.config });
        } catch (e) {
          if (!(e instanceof ConfigError)) throw e;
          e.problems.forEach((p) => problems.push(p));
        }
      }
    if (problems.length) throw new ConfigError([...new Set(problems)]);
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    mkdirSync(out, { recursive: true });

    const interrupt = interruptSignal(() => process.stderr.write('\ninterrupt: finishing this step of the current run, saving it, then stopping the comparison\n'));
    const results = new Map<string, CompareRow>();
    try {
      for (const [i, plan] of plans.entries()) {
        process.stderr.write(`\n[${i + 1}/${plans.length}] --loss ${plan.loss} --seed ${plan.seed} → ${plan.dir}\n`);
        const r = await train(plan.config, { signal: interrupt.signal });
        if (r.interrupted) {
          process.stderr.write(`comparison stopped; the interrupted run can be resumed with: lgrpo-native train --resume ${plan.dir}\n`);
          process.exitCode = 130;
          break;
        }
        const row = results.get(plan.loss) ?? { loss: plan.loss, seeds: [], accuracy: [], startAccuracy: [], meanLength: [], lambda: plan.loss === 'lambda' ? [] : null, runs: [] };
        results.set(plan.loss, row);
        const first = r.evals[0], last = r.evals[r.evals.length - 1];
        row.seeds.push(plan.seed);
        row.runs.push(plan.dir);
        if (last) {
          row.accuracy.push(last.accuracy);
          row.meanLength.push(last.meanLength);
        }
        if (first) row.startAccuracy.push(first.accuracy);
        row.lambda?.push(r.lambda);
      }
    } finally {
      interrupt.dispose();
    }

    const rows = [...results.values()];
    writeFileSync(join(out, 'compare.json'), `${JSON.stringify({ losses, seeds, rows }, null, 2)}\n`);
    const runs = plans.filter((p) => results.get(p.loss)?.runs.includes(p.dir)).map((p) => loadRun(p.dir, `${p.loss} seed ${p.seed}`));
    writeReport(join(out, 'report.html'), runs, { title: `lgrpo-native compare: ${losses.join(', ')} × ${seeds.length} seed(s)` });
    console.log(formatCompareTable(rows));
    console.log(`\nruns, compare.json and report.html: ${out}`);
  },
};
