#!/usr/bin/env node
import { run } from '../dist/bundle/entry.js';
// Exit once everything written to stdout has been flushed (large JSON into a pipe).
run(process.argv).then((code) => process.stdout.write('', () => process.exit(code)));
