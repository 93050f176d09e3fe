// The program as Node.js loads it: tsc's output (dist/, type-checked, one file per module) bundled
// into a few files under dist/bundle/, which bin/bgdl.js imports. Node.js resolves, reads and links
// each ES module on its own; one file per module cost a worker ~19 ms of its start and each command
// ~10 ms (the worker: ~55 modules, first request at 88-99 ms against 70-74 ms bundled). Lazy
// `import()`s stay separate chunks, so a command still loads only what it runs. Packages stay outside
// (node_modules, loaded as they are). The bundle sits two directories below the package root, as
// tsc's files do: paths built from import.meta.url (bin/bgdl.js, package.json) resolve the same.

export default {
  input: { entry: 'dist/cli/entry.js' },
  platform: 'node',
  external: (id) => !id.startsWith('.') && !id.startsWith('/'),
  logLevel: 'warn',
  output: { dir: 'dist/bundle', format: 'esm', cleanDir: true },
};
