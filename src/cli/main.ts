#!/usr/bin/env node
// The lgrpo-native command line. Each command lives in its own module under
// src/cli/ (a yargs CommandModule) and is listed in COMMANDS; a command's heavy
// imports happen inside its handler, so `--help` and `info` stay fast.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
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
    .fail((message, error, y) => {
      // A usage error (message) gets the help text; a failing command gets its own
      // message only, and its stack when LGRPO_DEBUG is set.
      if (error) {
        console.error(`lgrpo-native: ${process.env.LGRPO_DEBUG ? error.stack ?? error.message : error.message}`);
      } else {
        y.showHelp();
        console.error(`\nlgrpo-native: ${message}`);
      }
      process.exit(1);
    })
    .parseAsync();
}

await main(hideBin(process.argv));
