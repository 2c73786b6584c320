// groupAdvantages: group-normalised advantages (spec §2). Native twins:
// native/ops/group_advantages.cc (CPU), kernels/group_advantages.cu (CUDA).
import { addon } from '../native.js';
import {
  enumOption, isTensor, numberOption, optionsArg, output, resolveGroups, sameDevice, tensorArg,
  type Out, type TensorLike,
} from './validate.js';

export type AdvantageMode = 'std' | 'mean' | 'batch' | 'rloo';

export interface GroupAdvantagesOptions {
  /** 'std' (GRPO, default), 'mean' (Dr. GRPO), 'batch' (TRL scale_rewards="batch"), 'rloo' */
  mode?: AdvantageMode;
  /** added to the std before dividing; default 1e-6 */
  eps?: number;
  /** 'unbiased' (N-1, TRL and verl; default) or 'population' (N) */
  std?: 'unbiased' | 'population';
  /** number of groups; default largest group id + 1 (required for CUDA inputs) */
  groups?: number;
}

export interface GroupAdvantagesResult<T> {
  advantages: Out<T>;
  /** per group id */
  groupMean: Out<T>;
  groupStd: Out<T>;
  /** 1 where the group has fewer than two rows or all-equal rewards (its advantages are 0) */
  degenerate: Out<T, Uint8Array>;
}

export function groupAdvantages<T extends TensorLike>(
  rewards: T,
  groupIds: TensorLike,
  options?: GroupAdvantagesOptions,
): GroupAdvantagesResult<T> {
  const opts = optionsArg(options);
  const r = tensorArg(rewards, 'rewards', ['f32'], [null]);
  const ids = tensorArg(groupIds, 'groupIds', ['i32'], [r.shape[0]]);
  sameDevice({ rewards: r, groupIds: ids });
  const mode = enumOption(opts.mode, 'mode', ['std', 'mean', 'batch', 'rloo'], 'std');
  const eps = numberOption(opts.eps, 'eps', 1e-6, { min: 0 });
  const std = enumOption(opts.std, 'std', ['unbiased', 'population'], 'unbiased');
  const { groups } = resolveGroups(ids, 'groupIds', opts.groups, r.shape[0], false);
  // Rewards are checked by both native twins, row by row, with the same words.
  const native = addon().groupAdvantages(r, ids, { mode, eps, std, groups });
  const asTensor = isTensor(rewards);
  return {
    advantages: output(native.advantages, asTensor),
    groupMean: output(native.groupMean, asTensor),
    groupStd: output(native.groupStd, asTensor),
    degenerate: output(native.degenerate, asTensor),
  } as GroupAdvantagesResult<T>;
}
