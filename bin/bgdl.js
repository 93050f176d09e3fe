#!/usr/bin/env node
// CommonJS (bin/package.json says so), as is the bundle it runs: Node.js loads CommonJS without the
// ES module loader's resolve-and-link steps (rolldown.config.mjs has the figures).
const { run } = require('../dist/bundle/entry.cjs');
// Exit once everything written to stdout has been flushed (large JSON into a pipe).
run(process.argv).then((code) => process.stdout.write('', () => process.exit(code)));
