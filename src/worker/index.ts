export { runWorker } from './worker.js';
export type { WorkerExit, WorkerOptions } from './worker.js';
