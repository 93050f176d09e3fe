#!/bin/sh
":" //; [ -z "${NODE_EXTRA_CA_CERTS:-}" ] || { BGDL_CARRIED_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export BGDL_CARRIED_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; }; exec node "$0" "$@"
// The line above is for the shell, which runs `bgdl`: it starts Node.js with NODE_EXTRA_CA_CERTS moved
// aside (src/shared/extra-ca.ts says why and how it is put back); to JavaScript it is a string and a
// comment. What follows is CommonJS (bin/package.json says so), as is the bundle it runs: Node.js
// loads CommonJS without the ES module loader's resolve-and-link steps (rolldown.config.mjs).
const { run } = require('../dist/bundle/entry.cjs');
// Exit once everything written to stdout has been flushed (large JSON into a pipe).
run(process.argv).then((code) => process.stdout.write('', () => process.exit(code)));
