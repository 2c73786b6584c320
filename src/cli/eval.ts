// `lgrpo-native eval`: held-out greedy accuracy and mean response length of a model,
// a checkpoint or a run directory, on the task a run trains on.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { DEFAULT_EVAL_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_REWARD } from '../train/config.js';

interface EvalArgs {
  model: string;
  task: string;
  reward?: string[];
  evalSize: number;
  maxNewTokens: number;
  show: number;
  json: boolean;
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Held-out greedy accuracy and mean response length of a model, checkpoint or run',
  builder: (y: Argv) =>
    y
      .option('model', {
        type: 'string', demandOption: true, requiresArg: true,
        describe: 'a checkpoint or Hugging Face model directory (config.json, safetensors, tokenizer.json), or a run directory (its latest checkpoint)',
      })
      .option('task', { type: 'string', default: 'arith', requiresArg: true, describe: "'arith' or a JSONL file (its held-out split, as train uses it)" })
      .option('reward', {
        type: 'string', array: true, requiresArg: true, defaultDescription: DEFAULT_REWARD.join(' '),
        describe: 'reward terms to average as well (as train --reward); accuracy is always the math answer check',
      })
      .option('eval-size', { type: 'number', default: DEFAULT_EVAL_SIZE, requiresArg: true, describe: 'held-out prompts to score' })
      .option('max-new-tokens', { type: 'number', default: DEFAULT_MAX_NEW_TOKENS, requiresArg: true, describe: 'response length limit in tokens' })
      .option('show', { type: 'number', default: 0, requiresArg: true, describe: 'print this many prompts with their completions' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' })
      .example('$0 eval --model runs/arith-lambda-20260101-120000', "the latest checkpoint of a run, on the built-in task") as unknown as Argv<EvalArgs>,
  handler: async (args: ArgumentsCamelCase<EvalArgs>) => {
    const { resolveConfig } = await import('../train/config.js');
    const { loadTask, loadRewards } = await import('../train/trainer.js');
    const { evaluate, loadModelDir } = await import('../train/model.js');
    const { resolve } = await import('node:path');
    for (const [flag, v] of [['show', args.show]] as const)
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${flag}: expected an integer >= 0, got ${v}`);
    // The train options' own validation (ranges, task file, reward modules).
    const { config } = resolveConfig({
      task: args.task, reward: args.reward, 'eval-size': args.evalSize, 'max-new-tokens': args.maxNewTokens,
    });
    const { policy, tokenizer, dir } = loadModelDir(resolve(args.model));
    try {
      const task = loadTask(config);
      const examples = task.evalSet(config.evalSize);
      if (examples.length === 0) throw new Error(`--task: ${config.task} has no held-out examples`);
      const rewards = await loadRewards(config);
      let failures = 0;
      const result = await evaluate(policy, tokenizer, examples, rewards, { maxNewTokens: config.maxNewTokens, onWarning: () => failures++ });
      if (failures) process.stderr.write(`warning: ${failures} reward evaluations failed and counted as 0\n`);
      if (args.json) {
        console.log(JSON.stringify({
          model: dir, task: config.task, examples: examples.length, accuracy: result.accuracy, mean_length: result.meanLength,
          reward_mean: result.rewardMean, truncated_frac: result.truncatedFrac, seconds: result.seconds,
          samples: result.samples.slice(0, args.show),
        }, null, 2));
        return;
      }
      for (const s of result.samples.slice(0, args.show))
        console.log(`${JSON.stringify(s.prompt)} → ${JSON.stringify(s.completion)} ${s.correct ? '✓' : `✗ (answer ${s.answer})`}`);
      console.log([
        `model:       ${dir}`,
        `task:        ${config.task} (${examples.length} held-out prompts, greedy)`,
        `accuracy:    ${result.accuracy.toFixed(4)}`,
        `mean length: ${result.meanLength.toFixed(2)} tokens`,
        `reward mean: ${result.rewardMean.toFixed(4)}`,
        `truncated:   ${(100 * result.truncatedFrac).toFixed(1)}%`,
      ].join('\n'));
    } finally {
      policy.dispose();
    }
  },
};
