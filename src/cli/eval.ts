// `lgrpo-native eval`: held-out greedy accuracy and mean response length of a model,
// a checkpoint or a run directory. A run (or one of its checkpoints) is evaluated as it
// trained: on its task and held-out split, with its rewards, response length limit and
// chat-template setting, unless flags say otherwise; a plain model directory gets the
// defaults (the built-in arith task).
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { DEFAULT_EVAL_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_REWARD } from '../train/config.js';

interface EvalArgs {
  model: string;
  task?: string;
  evalFile?: string;
  evalFraction?: number;
  reward?: string[];
  evalSize?: number;
  maxNewTokens?: number;
  chatTemplate?: string;
  show: number;
  json: boolean;
  device: string;
}

/** The flags eval shares with train, by train's flag name; only those typed are passed on. */
const SHARED = { task: 'task', evalFile: 'eval-file', evalFraction: 'eval-fraction', reward: 'reward', evalSize: 'eval-size', maxNewTokens: 'max-new-tokens', chatTemplate: 'chat-template' } as const;

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Held-out greedy accuracy and mean response length of a model, checkpoint or run',
  builder: (y: Argv) =>
    y
      .option('model', {
        type: 'string', demandOption: true, requiresArg: true,
        describe: 'a checkpoint or Hugging Face model directory (config.json, safetensors, tokenizer.json), or a run directory (its latest checkpoint)',
      })
      .option('task', { type: 'string', requiresArg: true, defaultDescription: "the run's, else 'arith'", describe: "'arith' or a JSONL file (its held-out split, as train uses it)" })
      .option('eval-file', { type: 'string', requiresArg: true, defaultDescription: "the run's", describe: 'a JSONL file of held-out problems (as train --eval-file)' })
      .option('eval-fraction', { type: 'number', requiresArg: true, defaultDescription: "the run's, else 0.1", describe: 'fraction of a JSONL --task held out (as train --eval-fraction)' })
      .option('reward', {
        type: 'string', array: true, requiresArg: true, defaultDescription: `the run's, else ${DEFAULT_REWARD.join(' ')}`,
        describe: 'reward terms to average as well (as train --reward); accuracy is always the math answer check',
      })
      .option('eval-size', { type: 'number', requiresArg: true, defaultDescription: `the run's, else ${DEFAULT_EVAL_SIZE}`, describe: 'held-out prompts to score' })
      .option('max-new-tokens', { type: 'number', requiresArg: true, defaultDescription: `the run's, else ${DEFAULT_MAX_NEW_TOKENS}`, describe: 'response length limit in tokens' })
      .option('chat-template', { type: 'string', choices: ['auto', 'none'], requiresArg: true, defaultDescription: "the run's, else auto", describe: "auto: prompts go through the tokenizer's chat template when it has one; none: plain text" })
      .option('show', { type: 'number', default: 0, requiresArg: true, describe: 'print this many prompts with their completions' })
      .option('device', { type: 'string', default: 'cpu', requiresArg: true, describe: "'cpu', 'cuda' or 'cuda:N' (the run's own device is not reused: its checkpoint loads anywhere)" })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' })
      .example('$0 eval --model runs/my-run', "the run's latest checkpoint, on the run's own task, rewards and settings")
      .example('$0 eval --model runs/my-run --task arith --eval-size 50', 'the same checkpoint on another task') as unknown as Argv<EvalArgs>,
  handler: async (args: ArgumentsCamelCase<EvalArgs>) => {
    const { resolveConfig } = await import('../train/config.js');
    const { findCheckpoint, isRunOrCheckpoint } = await import('../train/checkpoint.js');
    const { loadTask, loadRewards } = await import('../train/trainer.js');
    const { evaluate, loadModelDir, resolveModelDir } = await import('../train/model.js');
    const { basename, dirname, resolve } = await import('node:path');
    for (const [flag, v] of [['show', args.show]] as const)
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${flag}: expected an integer >= 0, got ${v}`);
    const modelPath = resolve(args.model);
    resolveModelDir(modelPath);  // a clear error for a path that is no model at all
    // A run or checkpoint carries the config it trained with: it is the base layer (as
    // for --resume), and only the flags typed here override it.
    let fromRun: string | null = null;
    // A run's best weights (--keep-best) evaluate with the settings of the run around them.
    for (const candidate of basename(modelPath) === 'best' ? [modelPath, dirname(modelPath)] : [modelPath]) {
      // Only a run or a checkpoint is searched: findCheckpoint tidies what it searches.
      if (!isRunOrCheckpoint(candidate)) continue;
      try {
        const found = findCheckpoint(candidate);
        if (found.state.config !== undefined) fromRun = found.dir;
        break;
      } catch {
        // a plain model directory: the defaults
      }
    }
    const given: Record<string, unknown> = {};
    for (const [key, flag] of Object.entries(SHARED)) if (args[key as keyof EvalArgs] !== undefined) given[flag] = args[key as keyof EvalArgs];
    const typed = Object.keys(given).map((f) => `--${f}`);
    // Another task than the run's: the run's held-out file belonged to its own task.
    if (given.task !== undefined && given['eval-file'] === undefined) given['eval-file'] = null;
    // The train options' own validation (ranges, task file, reward modules).
    const { config } = resolveConfig({ ...given, ...(fromRun !== null ? { resume: fromRun } : {}) });
    const { parseDevice } = await import('../tensor.js');
    const { policy, tokenizer, dir } = loadModelDir(modelPath, { chatTemplate: config.chatTemplate, device: parseDevice(args.device, '--device') });
    try {
      const task = loadTask(config);
      const available = task.evalSet().length;
      if (available === 0) throw new Error(`--task: ${config.task} has no held-out examples (raise --eval-fraction, or give --eval-file)`);
      if (args.evalSize !== undefined && args.evalSize > available && config.task !== 'arith') {
        const source = config.evalFile !== null ? `--eval-file ${basename(config.evalFile)} has ${available} problems`
          : `${basename(config.task)} holds out ${available} of its problems (--eval-fraction ${config.evalFraction})`;
        throw new Error(`--eval-size: asked for ${args.evalSize} held-out problems, but ${source}; give --eval-size ${available} or less, or more held-out problems`);
      }
      const examples = task.evalSet(Math.min(config.evalSize, available));
      const rewards = await loadRewards(config);
      let failures = 0;
      const result = await evaluate(policy, tokenizer, examples, rewards, { maxNewTokens: config.maxNewTokens, onWarning: () => failures++ });
      if (failures) process.stderr.write(`warning: ${failures} reward evaluations failed and counted as 0\n`);
      const settingsFrom = fromRun !== null ? `the run's settings${typed.length ? ` but ${typed.join(', ')}` : ''}` : 'defaults';
      if (args.json) {
        console.log(JSON.stringify({
          model: dir, task: config.task, examples: examples.length, accuracy: result.accuracy, mean_length: result.meanLength,
          reward_mean: result.rewardMean, truncated_frac: result.truncatedFrac, seconds: result.seconds,
          settings: { from: fromRun !== null ? 'run' : 'defaults', reward: config.reward.map((r) => (r.kind === 'module' ? r.path : r.name)), max_new_tokens: config.maxNewTokens, chat_template: config.chatTemplate && tokenizer.hasChatTemplate ? config.chatTemplate : 'none' },
          samples: result.samples.slice(0, args.show),
        }, null, 2));
        return;
      }
      for (const s of result.samples.slice(0, args.show))
        console.log(`${JSON.stringify(s.prompt)} → ${JSON.stringify(s.completion)} ${s.correct ? '✓' : `✗ (answer ${s.answer})`}`);
      console.log([
        `model:       ${dir}`,
        `task:        ${config.task} (${examples.length} held-out prompts, greedy; ${settingsFrom})`,
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
