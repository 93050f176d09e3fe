export { Store } from './store.js';
export type * from './store.js';
