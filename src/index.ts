// The public API of lgrpo-native, re-exported and nothing more.
export { Tensor, parseDevice, type Device } from './tensor.js';
export { type DType, type FloatDType, type TypedArray, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, toFloat32Array, fromFloat32Array } from './dtype.js';
export { buildInfo, setNumThreads, type BuildInfo } from './build_info.js';
export { groupAdvantages, type AdvantageMode, type GroupAdvantagesOptions, type GroupAdvantagesResult } from './ops/group_advantages.js';
export type { TensorLike } from './ops/validate.js';
