// The program as Node.js loads it: tsc's output (dist/, type-checked, one file per module) bundled
// into a few CommonJS files under dist/bundle/, which bin/bgdl.js requires. Measured at each start
// (median of 15 runs on the 2-core development machine):
// - one ES module per file: Node.js resolves, reads and links each on its own, and ~55 of them cost
//   a worker ~19 ms of its start and each command ~10 ms;
// - bundled as ES modules: `bgdl add` 100-102 ms, `status` 94-98 ms, the worker's first request at
//   ~80 ms from its start;
// - bundled as CommonJS, with commander inside (it is plain JavaScript) and a CommonJS bin/bgdl.js:
//   `add` 86-88 ms, `status` 82-85 ms, the worker's first request at 66-68 ms. Node.js's ES module
//   loader resolves and links asynchronously, module by module, where require() reads and runs.
// Lazy `import()`s stay separate chunks, so a command still loads only what it runs. Other packages
// stay outside (node_modules, loaded as they are: better-sqlite3 finds its native addon from its own
// directory). The bundle sits two directories below the package root, as tsc's files do: paths
// built from import.meta.url (bin/bgdl.js, package.json) resolve the same.

export default {
  input: { entry: 'dist/cli/entry.js' },
  platform: 'node',
  external: (id) => !id.startsWith('.') && !id.startsWith('/') && !/^commander(\/|$)/.test(id),
  logLevel: 'warn',
  output: { dir: 'dist/bundle', format: 'cjs', cleanDir: true, entryFileNames: '[name].cjs', chunkFileNames: '[name]-[hash].cjs' },
};
