// `lgrpo-native train`: λ-GRPO (or GRPO, DAPO, Dr. GRPO) on a task, into a run directory.
// Every option is in src/train/config.ts's table; this module parses, resolves, runs, and
// turns Ctrl-C into "finish the step, checkpoint, exit".
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { trainOptions } from '../train/config.js';

type TrainArgs = Record<string, unknown>;

/** An AbortSignal that the first SIGINT aborts; a second SIGINT ends the process at once. */
export function interruptSignal(onFirst: () => void): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const handler = (): void => {
    if (controller.signal.aborted) {
      process.stderr.write('\nsecond interrupt: exiting without saving\n');
      process.exit(130);
    }
    onFirst();
    controller.abort();
  };
  process.on('SIGINT', handler);
  return { signal: controller.signal, dispose: () => process.off('SIGINT', handler) };
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Train a policy with λ-GRPO (default: the built-in tiny model on the built-in arithmetic task)',
  builder: (y: Argv) =>
    trainOptions(y)
      .epilog(
        'Ctrl-C finishes the current step, saves a checkpoint and exits; --resume <run dir> continues exactly where it stopped.\n' +
        'Precedence: defaults < the resumed checkpoint\'s config < --config file < flags.',
      ) as Argv<TrainArgs>,
  handler: async (args: ArgumentsCamelCase<TrainArgs>) => {
    const { resolveConfig } = await import('../train/config.js');
    const { train } = await import('../train/trainer.js');
    const { config, warnings } = resolveConfig(args);
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    const interrupt = interruptSignal(() => process.stderr.write('\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to exit now)\n'));
    try {
      const result = await train(config, { signal: interrupt.signal, onStart: (out) => process.stderr.write(`run directory: ${out}\n`) });
      const first = result.evals[0], last = result.evals[result.evals.length - 1];
      const lines = [`run directory: ${result.out}`, `steps: ${result.step}/${config.steps}${result.interrupted ? ' (interrupted)' : ''}`];
      if (result.warmup) lines.push(`supervised warm-up: ${result.warmup.steps} steps, ${result.warmup.seconds.toFixed(1)} s, final loss ${result.warmup.finalLoss.toFixed(4)}`);
      if (first && last && first !== last)
        lines.push(`held-out greedy accuracy: ${first.accuracy.toFixed(3)} at step ${first.step} → ${last.accuracy.toFixed(3)} at step ${last.step} (mean length ${first.meanLength.toFixed(1)} → ${last.meanLength.toFixed(1)} tokens)`);
      else if (last) lines.push(`held-out greedy accuracy: ${last.accuracy.toFixed(3)} at step ${last.step} (mean length ${last.meanLength.toFixed(1)} tokens)`);
      // The best evaluation, step 0 included: a run whose RL only lost ground shows it here.
      const best = result.evals.reduce<typeof last | undefined>((b, e) => (b === undefined || e.accuracy > b.accuracy ? e : b), undefined);
      if (best && result.evals.length > 1)
        lines.push(`best held-out accuracy: ${best.accuracy.toFixed(3)} at step ${best.step}${config.keepBest ? ` (weights in ${result.out}/best)` : ''}`);
      if (config.loss === 'lambda') lines.push(`λ: ${result.lambda.toPrecision(4)}`);
      if (result.checkpoint) lines.push(`checkpoint: ${result.checkpoint}`);
      lines.push(`report: ${result.out}/report.html`, `time: ${result.seconds.toFixed(1)} s`);
      console.log(lines.join('\n'));
      if (result.interrupted) process.exitCode = 130;
    } finally {
      interrupt.dispose();
    }
  },
};
