// `lgrpo-native info`: what was built and what it will run on.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';

interface InfoArgs {
  json: boolean;
}

export const infoCommand: CommandModule<object, InfoArgs> = {
  command: 'info',
  describe: 'Show the build: addon path, SIMD level, kernel threads, CUDA devices',
  builder: (y: Argv) => y.option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
  handler: async (args: ArgumentsCamelCase<InfoArgs>) => {
    const { buildInfo } = await import('../build_info.js');
    const info = buildInfo();
    if (args.json) {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    const devices = info.cudaDevices.length
      ? info.cudaDevices.map((d) => `cuda:${d.index} ${d.name} (sm ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`).join('; ')
      : `none usable: ${info.cudaUnavailable || 'no device'}`;
    const lines = [
      `lgrpo-native ${info.version}`,
      `addon:        ${info.addonPath}`,
      `simd:         ${info.simd}`,
      `threads:      ${info.threads} (LGRPO_NUM_THREADS overrides)`,
      `cuda:         ${info.cudaEmulated ? 'emulated (the LGRPO_CUDA_EMU test build: kernels/*.cu run on the CPU)' : info.cuda ? 'compiled in' : 'not compiled in'}`,
      `cuda devices: ${devices}`,
      `zero-copy:    ${info.zeroCopy ? 'yes' : 'no'}; external buffers: ${info.externalBuffers ? 'yes' : 'no (outputs live in V8 memory)'}`,
      `node:         ${process.version} ${process.platform} ${process.arch}`,
    ];
    console.log(lines.join('\n'));
  },
};
