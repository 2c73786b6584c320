// `lgrpo-native compare`: several losses (default GRPO, DAPO, Dr. GRPO and λ-GRPO) over the
// same seeds, so that the differences between them are evidence rather than one draw.
// Within a seed every loss starts from the same warmed-up weights (the warm-up is computed
// once per seed and reused), trains on the same prompts in the same order and is
// evaluated on the same held-out set; what src/train/compare.ts reports from the runs is
// a 95% interval over seeds per loss and the per-seed (paired) difference to GRPO.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { LOSSES, resolveConfig, trainOptions, type ResolvedConfig } from '../train/config.js';

type CompareArgs = Record<string, unknown> & { losses: string; seeds: number; baseline: string; out?: string };

/** Seeds per loss when --seeds is not given. */
export const DEFAULT_COMPARE_SEEDS = 5;
/**
 * RL steps per run when --steps is given neither on the command line nor in --config: the
 * default 4 losses × 5 seeds (20 runs, 5 warm-ups) must fit in 15 minutes on 2 CPU cores,
 * which the train default's budget would not (docs/compare-default.md has the arithmetic).
 */
export const DEFAULT_COMPARE_STEPS = 150;

/** One run's config: train's precedence (defaults < --config < flags), with DEFAULT_COMPARE_STEPS as the default of --steps. */
export function compareRunConfig(flags: Record<string, unknown>): ResolvedConfig {
  const r = resolveConfig(flags);
  return r.sources.steps === 'default' ? resolveConfig({ ...flags, steps: DEFAULT_COMPARE_STEPS }) : r;
}

export const compareCommand: CommandModule<object, CompareArgs> = {
  command: 'compare',
  describe: 'Train under several losses on the same seeds; print accuracy with 95% intervals and paired differences, write one overlaid report',
  builder: (y: Argv) =>
    trainOptions(y, ['loss', 'out', 'resume'], { steps: `${DEFAULT_COMPARE_STEPS} (train's default is longer: 20 runs must fit in 15 minutes)` })
      .option('losses', {
        type: 'string', default: LOSSES.join(','), requiresArg: true, group: 'Compare:',
        describe: `comma-separated losses to compare (${LOSSES.join(', ')})`,
      })
      .option('seeds', {
        type: 'number', default: DEFAULT_COMPARE_SEEDS, requiresArg: true, group: 'Compare:',
        describe: 'runs per loss, seeds --seed, --seed + 1, …; every loss of a seed shares its warm-up, prompts and eval set',
      })
      .option('baseline', {
        type: 'string', default: 'grpo', requiresArg: true, group: 'Compare:',
        describe: 'the loss the others are compared with, seed by seed',
      })
      .option('out', {
        type: 'string', requiresArg: true, group: 'Compare:', defaultDescription: 'runs/compare-<time>',
        describe: 'directory of the comparison: one run directory per loss and seed, the shared warm-ups, compare.json, report.html',
      })
      .example('$0 compare --steps 20 --seeds 2', 'a quick comparison of the four losses') as unknown as Argv<CompareArgs>,
  handler: async (args: ArgumentsCamelCase<CompareArgs>) => {
    const { join, resolve } = await import('node:path');
    const { loadavg } = await import('node:os');
    const { writeFileSync } = await import('node:fs');
    const { ensureDir } = await import('../atomic_file.js');
    const { ConfigError } = await import('../train/config.js');
    const { train } = await import('../train/trainer.js');
    const { loadRun, writeReport } = await import('../train/report.js');
    const { summariseComparison, formatCompareTable, compareTableCells, meanCurves } = await import('../train/compare.js');
    const { formatDuration } = await import('../train/progress.js');
    const { interruptSignal } = await import('./train.js');

    const losses = String(args.losses).split(',').map((s) => s.trim()).filter(Boolean);
    const bad = losses.filter((l) => !(LOSSES as readonly string[]).includes(l));
    if (losses.length === 0 || bad.length) throw new Error(`--losses: expected a comma-separated subset of ${LOSSES.join(', ')}, got ${JSON.stringify(args.losses)}`);
    if (new Set(losses).size !== losses.length) throw new Error(`--losses: ${JSON.stringify(args.losses)} names a loss twice`);
    if (!Number.isSafeInteger(args.seeds) || args.seeds < 1) throw new Error(`--seeds: expected an integer >= 1, got ${args.seeds}`);
    const baseline = String(args.baseline);
    if (!(LOSSES as readonly string[]).includes(baseline)) throw new Error(`--baseline: expected one of ${LOSSES.join(', ')}, got ${JSON.stringify(baseline)}`);
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    const out = resolve(args.out ?? join('runs', `compare-${stamp}`));
    const baseSeed = (args.seed as number | undefined) ?? 0;
    const seeds = Array.from({ length: args.seeds }, (_, i) => baseSeed + i);

    // Every configuration is resolved (and so validated) before the first run starts.
    // Seed by seed: the first loss of a seed computes its warm-up, the others reuse it.
    type Plan = { loss: string; seed: number; dir: string; config: ResolvedConfig['config'] };
    const plans: Plan[] = [];
    const warnings = new Set<string>();
    const problems: string[] = [];
    for (const seed of seeds)
      for (const loss of losses) {
        const dir = join(out, `${loss}-seed${seed}`);
        try {
          const r = compareRunConfig({ ...args, loss, seed, out: dir, losses: undefined, seeds: undefined, baseline: undefined });
          r.warnings.forEach((w) => warnings.add(w));
          plans.push({ loss, seed, dir, config: r.config });
        } catch (e) {
          if (!(e instanceof ConfigError)) throw e;
          e.problems.forEach((p) => problems.push(p));
        }
      }
    if (problems.length) throw new ConfigError([...new Set(problems)]);
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    ensureDir(out, 'out');  // not mkdirSync({recursive}): it spins forever under /proc
    const warmups = join(out, 'warmups');

    // ETA: the wall time per training step so far (evals included) times the steps left,
    // plus the warm-ups not yet computed at the time the computed ones took.
    const started = performance.now();
    const loadStart = loadavg();
    let stepSeconds = 0, stepsTimed = 0, stepMark: number | null = null, current = 0, currentStep = 0;
    const warmupSeconds: number[] = [];
    const seedsWarmed = new Set<number>();
    const eta = (): string => {
      if (stepsTimed === 0) return '?';
      let stepsLeft = plans[current].config.steps - currentStep;
      for (let k = current + 1; k < plans.length; k++) stepsLeft += plans[k].config.steps;
      const pendingWarmups = new Set(plans.slice(current + 1).map((p) => p.seed).filter((s) => !seedsWarmed.has(s))).size;
      const warm = warmupSeconds.length ? warmupSeconds.reduce((a, b) => a + b, 0) / warmupSeconds.length : 0;
      return formatDuration((stepSeconds / stepsTimed) * stepsLeft + pendingWarmups * warm);
    };

    const interrupt = interruptSignal(() => process.stderr.write('\ninterrupt: finishing this step of the current run, saving it, then stopping the comparison\n'));
    const finished: Array<import('../train/compare.js').CompareRun> = [];
    try {
      for (const [i, plan] of plans.entries()) {
        current = i;
        currentStep = 0;
        stepMark = null;
        const label = `[${i + 1}/${plans.length} ${plan.loss} seed ${plan.seed}]`;
        process.stderr.write(`\n${label} → ${plan.dir} (${formatDuration((performance.now() - started) / 1000)} so far, all done in ${eta()})\n`);
        const r = await train(plan.config, {
          signal: interrupt.signal,
          warmupCache: warmups,
          // The comparison's ETA rides on the run's own progress lines.
          progressLabel: () => `${label.slice(0, -1)} | all done in ${eta()}]`,
          onStep: (step) => {
            const now = performance.now();
            if (stepMark !== null) {
              stepSeconds += (now - stepMark) / 1000;
              stepsTimed++;
            }
            stepMark = now;
            currentStep = step;
          },
        });
        if (r.warmup && !r.warmup.cached) warmupSeconds.push(r.warmup.seconds);
        seedsWarmed.add(plan.seed);
        if (r.interrupted) {
          process.stderr.write(`comparison stopped; the interrupted run can be resumed with: lgrpo-native train --resume ${plan.dir}\n`);
          process.exitCode = 130;
          break;
        }
        const first = r.evals.find((e) => e.step === 0);
        const later = r.evals.filter((e) => e.step > 0);
        const last = r.evals[r.evals.length - 1];
        finished.push({
          loss: plan.loss, seed: plan.seed, dir: plan.dir,
          startAccuracy: first?.accuracy ?? NaN,
          finalAccuracy: last?.accuracy ?? NaN,
          bestAccuracy: later.length ? Math.max(...later.map((e) => e.accuracy)) : NaN,
          meanLength: last?.meanLength ?? NaN,
          lambda: plan.loss === 'lambda' ? r.lambda : null,
        });
      }
    } finally {
      interrupt.dispose();
    }

    const rows = summariseComparison(finished, losses, baseline);
    const seconds = (performance.now() - started) / 1000;
    const loadEnd = loadavg();
    const settings = { ...plans[0].config, loss: undefined, seed: undefined, out: undefined };
    writeFileSync(join(out, 'compare.json'), `${JSON.stringify({
      losses, seeds, baseline, seconds, loadavg: { start: loadStart, end: loadEnd }, settings, runs: finished, rows,
    }, null, 2)}\n`);
    const byLoss = losses.map((loss) => {
      const seedRuns = finished.filter((f) => f.loss === loss).map((f) => loadRun(f.dir));
      // The mean line, and the band from the lowest to the highest seed (report.ts draws it).
      return { ...meanCurves(`${loss} (mean of ${seedRuns.length} seeds)`, seedRuns), seeds: seedRuns };
    });
    const notes = [
      'mean ± half-width of the 95% interval over seeds (Student t); differences are paired by seed: same warm-up, prompts and eval set.',
      `best acc: the best eval after step 0. Took ${formatDuration(seconds)}; load average ${loadStart.map((x) => x.toFixed(2)).join(' ')} at the start, ${loadEnd.map((x) => x.toFixed(2)).join(' ')} at the end.`,
    ];
    writeReport(join(out, 'report.html'), byLoss, {
      title: `lgrpo-native compare: ${losses.join(', ')} × ${seeds.length} seed(s)`,
      summary: { ...compareTableCells(rows, baseline), notes },
    });
    console.log(formatCompareTable(rows, baseline));
    console.log(`\n${notes.join('\n')}`);
    console.log(`runs, compare.json and report.html: ${out}`);
  },
};
