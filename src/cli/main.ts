#!/usr/bin/env node
// The lgrpo-native command line. Each command lives in its own module under
// src/cli/ (a yargs CommandModule) and is listed in COMMANDS; a command's heavy
// imports happen inside its handler, so `--help` and `info` stay fast.
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { editDistance } from '../train/config.js';
import { benchCommand } from './bench.js';
import { compareCommand } from './compare.js';
import { evalCommand } from './eval.js';
import { infoCommand } from './info.js';
import { sampleCommand } from './sample.js';
import { trainCommand } from './train.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const COMMANDS: CommandModule<any, any>[] = [trainCommand, evalCommand, sampleCommand, compareCommand, benchCommand, infoCommand];

function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'lgrpo-native') return pkg.version ?? 'unknown';
    } catch {
      // not here: look in the parent
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** Every option a command defines (its builder run on a fresh parser). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function commandFlags(command: CommandModule<any, any>): string[] {
  const probe = yargs([]);
  if (typeof command.builder === 'function') command.builder(probe);
  else if (command.builder) probe.options(command.builder);
  // getOptions is public in yargs but missing from its type definitions.
  const options = (probe as unknown as { getOptions(): { key: Record<string, unknown> } }).getOptions();
  return [...Object.keys(options.key), 'help', 'version'];
}


/** The candidate nearest to `word` when it is close enough to be a likely typo (or a prefix/extension of it). */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const c of candidates) {
    // A flag that merely lacks or adds a suffix (--loss vs --losses) counts as close.
    const score = c.startsWith(word) || word.startsWith(c) ? Math.min(1, editDistance(word, c)) : editDistance(word, c);
    if (score < bestScore) [best, bestScore] = [c, score];
  }
  return best !== undefined && bestScore <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** yargs' usage message, turned into one line that says what to type instead. */
export function usageProblem(message: string, knownOptions: readonly string[]): string {
  const flags = knownOptions.filter((k) => k.length > 1 && !/[A-Z]/.test(k) && k !== '$0' && k !== '_');
  const unknown = /^Unknown arguments?: (.*)$/s.exec(message);
  if (unknown) {
    const names = unknown[1].split(', ');
    // yargs names an unknown --kebab-case flag twice, the second time in camelCase.
    const kebab = (n: string): string => n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    return names.filter((n) => !/[A-Z]/.test(n) || !names.includes(kebab(n))).map((name) => {
      const dashes = name.length === 1 ? '-' : '--';
      const hint = name.length > 1 ? nearest(name, flags) : undefined;
      return `unknown option ${dashes}${name}${hint ? ` (did you mean --${hint}?)` : ''}`;
    }).join('; ');
  }
  const invalid = /Argument: (\S+), Given: (.*?), Choices: (.*)$/m.exec(message);
  if (invalid) {
    const choices = invalid[3].split(', ').map((c) => c.replace(/^"|"$/g, ''));
    const given = invalid[2].replace(/^"|"$/g, '');
    const hint = nearest(given, choices);
    return `--${invalid[1]}: ${JSON.stringify(given)} is not one of ${choices.join(', ')}${hint ? ` (did you mean ${hint}?)` : ''}`;
  }
  const missing = /^Missing required arguments?: (.*)$/.exec(message);
  if (missing) return `missing ${missing[1].split(', ').map((f) => `--${f}`).join(', ')}`;
  const noValue = /^Not enough arguments following: (.*)$/.exec(message);
  if (noValue) return `--${noValue[1]} needs a value`;
  return message.replace(/\s*\n\s*/g, ' ');
}

export async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('lgrpo-native')
    .usage('$0 <command> [options]\n\nλ-GRPO kernels and trainer for language models, from TypeScript.');
  for (const command of COMMANDS) cli = cli.command(command);
  await cli
    .demandCommand(1, 'Name a command (see --help).')
    .recommendCommands()
    .strict()
    .help()
    .alias('h', 'help')
    .version(packageVersion())
    .wrap(Math.min(100, process.stdout.columns || 100))
    .fail((message, error) => {
      // A usage error gets one line saying what is wrong (with the nearest valid flag or
      // value) and where the help is; a failing command gets its own message only, and
      // its stack when LGRPO_DEBUG is set.
      // yargs throws its own parse problems (a flag with no value) as a YError.
      if (error && error.name === 'YError') [message, error] = [error.message, undefined as unknown as Error];
      if (error) {
        console.error(`lgrpo-native: ${process.env.LGRPO_DEBUG ? error.stack ?? error.message : error.message}`);
      } else {
        const command = COMMANDS.find((c) => c.command === argv[0]);
        const known = command ? commandFlags(command) : ['help', 'version'];
        const typo = /^Did you mean (\S+)\?$/.exec(message);
        const names = COMMANDS.map((c) => String(c.command));
        const problem = typo ? `unknown command ${JSON.stringify(argv[0])} (did you mean ${typo[1]}?)`
          : !command && argv[0] !== undefined && !argv[0].startsWith('-') && /^Unknown argument/.test(message)
            ? `unknown command ${JSON.stringify(argv[0])} (the commands: ${names.join(', ')})`
            : usageProblem(message, known);
        console.error(`lgrpo-native: ${problem}`);
        console.error(`Run 'lgrpo-native ${command ? `${argv[0]} ` : ''}--help' for the ${command ? 'options' : 'commands'}.`);
      }
      process.exit(1);
    })
    .parseAsync();
}

// Only as the bin, so that tests can import the helpers above.
if (process.argv[1] && fileURLToPath(import.meta.url) === realpathOrSelf(process.argv[1])) await main(hideBin(process.argv));

function realpathOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
