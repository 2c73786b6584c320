// The durable-write helpers live below both the engine and the trainer.
export * from '../atomic_file.js';
