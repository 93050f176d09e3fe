#!/usr/bin/env node
import { main } from '../dist/cli/main.js';
// Exit once everything written to stdout has been flushed (large JSON into a pipe).
main(process.argv).then((code) => process.stdout.write('', () => process.exit(code)));
