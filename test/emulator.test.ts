// The emulated cuda:0 (emulator/) catches what it claims to: each deliberately broken
// kernel of emulator/faults.cu must end in the error, or the poisoned outputs, below.
// Runs only on the emulated build (npm run test:emu).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildInfo } from '../src/index.js';
import { addon } from '../src/native.js';

const emulated = buildInfo().cudaEmulated;
const fault = (name: string): string => addon().emulatorFault(name) as string;

describe('the CUDA emulator', { skip: emulated ? false : 'needs the emulated build (npm run test:emu)' }, () => {
  it('reports barrier divergence, naming both lines', () => {
    assert.match(fault('divergent-barrier'), /barrier divergence: it waits at emulator\/faults\.cu:\d+ while others wait at emulator\/faults\.cu:\d+/);
  });

  it('reports a deadlock between a barrier and a shuffle', () => {
    assert.match(fault('barrier-against-shuffle'), /deadlock: .*wait at __syncthreads at emulator\/faults\.cu:\d+.*wait at a warp collective at emulator\/faults\.cu:\d+/);
  });

  it('fails a shuffle whose mask names a lane that has exited', () => {
    // Which thread notices first depends on the order: a lane arriving after the exit, or the exit itself.
    assert.match(fault('shuffle-after-exit'),
      /warp collective at emulator\/faults\.cu:\d+: the mask names lanes that have exited|thread \(31,0,0\) of block \(0,0,0\) exited while lanes of its warp wait for it at emulator\/faults\.cu:\d+/);
    try {
      process.env.LGRPO_EMU_ORDER = 'reverse';
      assert.match(fault('shuffle-after-exit'), /warp collective at emulator\/faults\.cu:\d+: the mask names lanes that have exited/);
    } finally {
      delete process.env.LGRPO_EMU_ORDER;
    }
  });

  it('poisons shared memory for every block, so unwritten reads are NaN', () => {
    assert.equal(fault('half-written-shared'), 'no error, 32 NaN outputs');
  });

  it('poisons fresh device memory', () => {
    assert.equal(fault('read-unwritten'), 'no error, 64 NaN outputs');
  });

  it('shows a missing barrier as NaN, and LGRPO_EMU_ORDER exposes races the default order hides', () => {
    assert.equal(fault('missing-barrier'), 'no error, 32 NaN outputs');
    assert.equal(fault('missing-barrier-low-writer'), 'no error, 0 NaN outputs');  // thread 0 writes first
    try {
      process.env.LGRPO_EMU_ORDER = 'reverse';
      assert.equal(fault('missing-barrier-low-writer'), 'no error, 63 NaN outputs');
      process.env.LGRPO_EMU_ORDER = 'random:7';
      assert.match(fault('missing-barrier-low-writer'), /no error, [1-9]\d* NaN outputs/);
    } finally {
      delete process.env.LGRPO_EMU_ORDER;
    }
  });

  it('refuses more than 48 KiB of static shared memory, a bad launch and a copy of the wrong kind', () => {
    assert.match(fault('too-much-shared'), /__shared__ emulator\/faults\.cu:\d+:big takes the block past 49152 bytes/);
    assert.match(fault('bad-launch'), /invalid launch configuration \(grid 1x1x1, block 2048x1x1\)/);
    assert.match(fault('host-to-device-into-host'), /cudaMemcpy: the destination is not inside one device allocation/);
  });
});
