// The trainer's data layer as the package exports it: tasks, rewards, tokenizer.
export type { Example, Task } from './tasks/types.js';
export { arithTask, sftExamples, evalSet as arithEvalSet, type ArithOptions, type ArithTaskOptions, type SftExample } from './tasks/arith.js';
export { jsonlTask, loadJsonl, completionOf, splitExamples, type JsonlTaskOptions } from './tasks/jsonl.js';
export { mathReward, extractAnswer, isCorrect } from './rewards/math.js';
export { formatReward, makeFormatReward, makeLengthPenalty, type FormatRewardOptions, type LengthPenaltyOptions } from './rewards/format.js';
export { loadRewardModule, resolveReward, scoreAll, type RewardFn, type WeightedReward, type RewardWarning, type ScoreResult } from './rewards/loader.js';
export { loadTokenizer, saveTokenizer, type TextTokenizer, type ChatMessage } from './tokenizer.js';
export { supervisedWarmup, warmupData, type WarmupPair, type WarmupOptions, type WarmupResult } from './sft.js';
export { loadModelDir, evaluate, complete, tinyModel, type LoadedModel, type EvalResult, type Completion } from './model.js';
