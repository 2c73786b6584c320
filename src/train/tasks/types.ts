// What the trainer consumes from a task, whatever its source (built-in arithmetic or a JSONL
// file). Rewards receive the same Example objects, so a user reward can read extra fields
// of its JSONL records (they are kept next to prompt and answer).

export interface Example {
  /** The text the policy continues (before any chat template). */
  prompt: string;
  /** The reference answer, as text (numbers from JSONL are converted). */
  answer: string;
  [field: string]: unknown;
}

export interface Task {
  readonly name: string;
  /** Number of distinct training examples, or null when the stream never repeats. */
  readonly trainSize: number | null;
  /**
   * The index-th training example of a deterministic stream: the trainer's data cursor is just
   * this index, so resuming from a checkpoint replays exactly the same prompts.
   */
  trainExample(index: number): Example;
  /** The training split, for a finite task (a JSONL file); its reference completions feed the warm-up. */
  readonly trainSet?: readonly Example[];
  /** A held-out set disjoint from every training example, the same on every call. */
  evalSet(n?: number): Example[];
}
