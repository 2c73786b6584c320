// The public API of lgrpo-native, re-exported and nothing more.
export { Tensor, parseDevice, release, type Device } from './tensor.js';
export { type DType, type FloatDType, type TypedArray, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, toFloat32Array, fromFloat32Array } from './dtype.js';
export { buildInfo, cudaMemoryStats, cudaSynchronize, emptyCudaCache, setMatmulPrecision, setNumThreads, type BuildInfo, type MatmulPrecision } from './build_info.js';
export type { CudaMemoryStats } from './native.js';
export { groupAdvantages, type AdvantageMode, type GroupAdvantagesOptions, type GroupAdvantagesResult } from './ops/group_advantages.js';
export { tokenLogprobs, tokenLogprobsBackward, type TokenLogprobsOptions, type TokenLogprobsResult, type TokenLogprobsBackwardOptions, type GradOut } from './ops/token_logprobs.js';
export { lambdaWeights, type LambdaWeightsOptions, type LambdaWeightsResult } from './ops/lambda_weights.js';
export { grpoLoss, grpoLossWeights, AGGREGATIONS, type Aggregation, type GrpoLossInput, type GrpoLossResult, type GrpoLossStats, type GrpoLossWeights, type GrpoLossWeightsOptions } from './ops/grpo_loss.js';
export { linearTokenLogprobs, linearTokenLogprobsBackward, SavedLogits, type LinearTokenLogprobsOptions, type LinearTokenLogprobsResult, type LinearTokenLogprobsBackwardOptions, type LinearTokenLogprobsGradients } from './ops/linear_token_logprobs.js';
export { Policy, type PolicyOptions, type RandomPolicyOptions, type ParameterInfo, type Batch, type ForwardResult, type BackwardOptions, type GenerateOptions, type GenerateResult, type SequenceLogprobsOptions, type SaveOptions, type PolicyStats } from './engine/policy.js';
export type { TensorLike } from './ops/validate.js';
export { AdamW, NonFiniteGradError, defaultNoDecay, type AdamWOptions, type AdamWHyperparameters, type AdamWStepResult, type AdamWState, type AdamWMoments, type NamedBuffers, type ParamBuffer } from './engine/adamw.js';
export { linearWarmup, type LrSchedule, type ScheduleKind, type WarmupOptions } from './engine/schedule.js';
export * from './train/data.js';
export { train, resolveConfig, loadTask, loadRewards, type TrainConfig, type TrainHooks, type TrainResult, type EvalSummary } from './train/trainer.js';
export { ConfigError, configToJson, type RewardInput, type RewardSpec, type ResolvedConfig } from './train/config.js';
