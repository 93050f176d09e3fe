// The transfer engine's public face: the worker hands it requests and callbacks (types.ts) and gets back
// results or classified TransferErrors. It knows nothing of the store.

export * from './types.js';
export { download, judgeResponse, parseContentRange, rangeHeaders, type Verdict } from './download.js';
export { upload } from './upload.js';
export { downloadSplit, type SplitCallbacks, type SplitOptions } from './split.js';
export { TokenBucket } from './throttle.js';
export { fencedError } from './partfile.js';
export { backoffDelay, classifyError, classifyStatus, parseRetryAfter } from './classify.js';
export { closeDispatchers, dispatcherFor } from './dispatch.js';
export { pipelineCapacity } from './h1.js';
export { nameFromResponse, numberedName, parseContentDisposition, pickFreePath, safeBaseName } from './naming.js';
export { firstHop, nextHop, type Hop, type RedirectRules } from './http.js';
