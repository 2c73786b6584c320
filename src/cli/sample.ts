// `lgrpo-native sample`: completions of prompts from a model, checkpoint or run directory.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { DEFAULT_MAX_NEW_TOKENS } from '../train/config.js';

interface SampleArgs {
  model: string;
  prompt: string[];
  n: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  maxNewTokens: number;
  seed: number;
  chatTemplate?: 'auto' | 'none';
  json: boolean;
  device: string;
}

/** The escapes a shell makes awkward to type: \n, \t and \\. */
export function unescapePrompt(text: string): string {
  return text.replace(/\\(n|t|\\)/g, (_m, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
}

export const sampleCommand: CommandModule<object, SampleArgs> = {
  command: 'sample',
  describe: 'Print completions of prompts from a model, checkpoint or run',
  builder: (y: Argv) =>
    y
      .option('model', {
        type: 'string', demandOption: true, requiresArg: true,
        describe: 'a checkpoint or Hugging Face model directory, or a run directory (its latest checkpoint)',
      })
      .option('prompt', {
        type: 'string', array: true, demandOption: true, requiresArg: true,
        describe: 'prompt text (repeat for several); \\n, \\t and \\\\ are read as escapes; a chat template, when the tokenizer has one, is applied',
      })
      .option('n', { type: 'number', default: 1, requiresArg: true, describe: 'completions per prompt' })
      .option('temperature', {
        type: 'number', requiresArg: true, defaultDescription: "generation_config.json's when it has do_sample: true, else 0",
        describe: 'sampling temperature; 0 is greedy',
      })
      .option('top-p', { type: 'number', requiresArg: true, defaultDescription: "generation_config.json's when sampling by it, else 1", describe: 'nucleus sampling mass (with --temperature > 0)' })
      .option('top-k', { type: 'number', requiresArg: true, defaultDescription: "generation_config.json's when sampling by it, else 0 (off)", describe: 'sample among the k most probable tokens (with --temperature > 0)' })
      .option('max-new-tokens', { type: 'number', default: DEFAULT_MAX_NEW_TOKENS, requiresArg: true, describe: 'response length limit in tokens' })
      .option('seed', { type: 'number', default: 0, requiresArg: true, describe: 'seed of the sampler' })
      .option('chat-template', {
        type: 'string', choices: ['auto', 'none'], requiresArg: true, defaultDescription: "the run's, else auto",
        describe: "auto: the prompt goes through the tokenizer's chat template when it has one; none: as it is",
      })
      .option('device', { type: 'string', default: 'cpu', requiresArg: true, describe: "'cpu', 'cuda' or 'cuda:N' (the run's own device is not reused: its checkpoint loads anywhere)" })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON: one object per prompt with the text the model saw and its completions' })
      .example("$0 sample --model runs/my-run --prompt '12+7+5=? (#### n)\\n'", 'greedy completion of an arithmetic prompt') as unknown as Argv<SampleArgs>,
  handler: async (args: ArgumentsCamelCase<SampleArgs>) => {
    const { complete, generationSampling, loadModelDir } = await import('../train/model.js');
    const { findCheckpoint, isRunOrCheckpoint } = await import('../train/checkpoint.js');
    const { basename, dirname, resolve } = await import('node:path');
    const int = (flag: string, v: number, min: number): void => {
      if (!Number.isSafeInteger(v) || v < min) throw new Error(`--${flag}: expected an integer >= ${min}, got ${v}`);
    };
    int('n', args.n, 1);
    int('max-new-tokens', args.maxNewTokens, 1);
    int('seed', args.seed, 0);
    if (args.temperature !== undefined && (!(args.temperature >= 0) || !Number.isFinite(args.temperature))) throw new Error(`--temperature: expected a number >= 0, got ${args.temperature}`);
    if (args.topP !== undefined && !(args.topP > 0 && args.topP <= 1)) throw new Error(`--top-p: expected a number in (0, 1], got ${args.topP}`);
    if (args.topK !== undefined) int('top-k', args.topK, 0);
    const prompts = args.prompt.map(unescapePrompt);
    // A run (or its checkpoint) samples as it trained: with or without the chat template.
    let chatTemplate = args.chatTemplate;
    if (chatTemplate === undefined) {
      const path = resolve(args.model);
      for (const candidate of basename(path) === 'best' ? [path, dirname(path)] : [path]) {
        if (!isRunOrCheckpoint(candidate)) continue;
        try {
          const saved = findCheckpoint(candidate).state.config?.['chat-template'];
          if (saved === 'none' || saved === 'auto') chatTemplate = saved;
          break;
        } catch {
          // a plain model directory (or a run's best weights: their run's setting)
        }
      }
    }
    const { parseDevice } = await import('../tensor.js');
    const { policy, tokenizer, dir } = loadModelDir(resolve(args.model), { chatTemplate, device: parseDevice(args.device, '--device') });
    try {
      // As transformers' generate(): with no sampling flag, the model directory's
      // generation_config.json decides (Qwen2.5-Instruct samples at 0.7 / 0.8 / 20); a flag
      // overrides just its own setting; without the file (or without do_sample) it is greedy.
      const file = generationSampling(tokenizer);
      const byFile = file?.doSample === true && args.temperature === undefined ? file : null;
      const temperature = args.temperature ?? byFile?.temperature ?? 0;
      const sampling = file?.doSample === true && temperature > 0 ? file : null;
      const topP = args.topP ?? sampling?.topP ?? 1;
      const topK = args.topK ?? sampling?.topK ?? 0;
      const from = byFile !== null ? 'generation_config.json' : args.temperature !== undefined ? 'flags' : 'greedy default';
      if (args.n > 1 && temperature === 0)
        throw new Error(`--n: several completions of one prompt need --temperature > 0 (greedy decoding gives one${file === null ? '' : '; generation_config.json has no do_sample: true'})`);
      if (args.topP !== undefined && args.topP < 1 && temperature === 0) throw new Error('--top-p: has no effect with greedy decoding (--temperature 0)');
      if (args.topK !== undefined && args.topK > 0 && temperature === 0) throw new Error('--top-k: has no effect with greedy decoding (--temperature 0)');
      if (byFile !== null) {
        const ignored = Object.entries(byFile.unsupported).map(([k, v]) => `${k} ${JSON.stringify(v)}`);
        console.error(`sampling as generation_config.json says: temperature ${temperature}, top_p ${topP}, top_k ${topK}` +
          `${ignored.length ? ` (not supported, ignored: ${ignored.join(', ')})` : ''}; --temperature 0 for greedy`);
      }
      const encoded = prompts.flatMap((p) => Array.from({ length: args.n }, () => tokenizer.encodePrompt(p)));
      const completions = complete(policy, tokenizer, encoded, {
        maxNewTokens: args.maxNewTokens, temperature, topP, topK, seed: args.seed,
      });
      if (args.json) {
        console.log(JSON.stringify({
          model: dir,
          settings: { temperature, top_p: topP, top_k: topK, from },
          results: prompts.map((prompt, i) => ({
            prompt,
            prompt_text: tokenizer.formatPrompt(prompt),
            completions: completions.slice(i * args.n, (i + 1) * args.n).map((c) => ({ text: c.text, tokens: c.tokens.length, stopped: c.stopped })),
          })),
        }, null, 2));
        return;
      }
      prompts.forEach((prompt, i) => {
        console.log(`prompt: ${JSON.stringify(prompt)}`);
        for (const c of completions.slice(i * args.n, (i + 1) * args.n))
          console.log(`  ${JSON.stringify(c.text)}  (${c.tokens.length} tokens${c.stopped ? '' : ', cut at --max-new-tokens'})`);
      });
    } finally {
      policy.dispose();
    }
  },
};
