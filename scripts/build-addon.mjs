#!/usr/bin/env node
// Builds the native addon at install time. cmake-js is the primary build (it adds the
// CUDA twins when nvcc is found); machines without CMake fall back to node-gyp, which
// builds the CPU-only addon. Nothing is downloaded: cmake-js takes Node-API headers
// from the node-api-headers package, node-gyp from the local Node installation.
//
//   LGRPO_BUILD=cmake|gyp   force one build system
//   LGRPO_BUILD=emu         the CUDA twins on an emulated cuda:0 (tests only), in build-emu/
//   LGRPO_BUILD=scalar      the scalar paths only, no -mavx2, CPU only (tests only), in build-scalar/
//   LGRPO_CUDA=0            cmake-js build without CUDA even when nvcc exists
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const forced = process.env.LGRPO_BUILD;

function run(command, args) {
  console.log(`lgrpo-native: ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  return result.status === 0;
}

function hasCmake() {
  const result = spawnSync('cmake', ['--version'], { stdio: 'ignore' });
  return result.status === 0;
}

function buildWithCmake({ emulated = false, scalar = false } = {}) {
  const cli = require.resolve('cmake-js/bin/cmake-js');
  const args = [cli, 'compile', '--out', emulated ? 'build-emu' : scalar ? 'build-scalar' : 'build-cmake'];
  if (emulated) args.push('--CDLGRPO_CUDA_EMU=ON', `--CDLGRPO_NODE=${process.execPath}`);
  if (scalar) args.push('--CDLGRPO_PORTABLE_SCALAR=ON', '--CDLGRPO_CUDA=OFF');
  if (process.env.CMAKE_CUDA_ARCHITECTURES) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.CMAKE_CUDA_ARCHITECTURES}`);
  return run(process.execPath, args);
}

// node-gyp downloads Node's headers unless told where they are: use npm's nodedir when
// set, else the headers installed beside this Node binary (<prefix>/include/node).
function localNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function buildWithGyp() {
  const cli = require.resolve('node-gyp/bin/node-gyp.js');
  const nodedir = localNodeDir();
  if (!nodedir) console.warn('lgrpo-native: no local Node headers found; node-gyp may try to download them');
  return run(process.execPath, [cli, 'rebuild', '--jobs', 'max', ...(nodedir ? [`--nodedir=${nodedir}`] : [])]);
}

let ok;
if (forced === 'gyp') ok = buildWithGyp();
else if (forced === 'cmake') ok = buildWithCmake();
else if (forced === 'emu') ok = buildWithCmake({ emulated: true });
else if (forced === 'scalar') ok = buildWithCmake({ scalar: true });
else if (hasCmake()) ok = buildWithCmake() || (console.warn('lgrpo-native: cmake-js failed, trying node-gyp'), buildWithGyp());
else ok = buildWithGyp();
if (!ok) {
  console.error('lgrpo-native: building the native addon failed. Install a C++17 compiler and CMake (or Python for node-gyp).');
  process.exit(1);
}
