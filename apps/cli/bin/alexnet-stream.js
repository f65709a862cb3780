#!/usr/bin/env node

// Compiled by `npm ci` (the root `prepare` script runs `tsc -b`), so no manual build step.
require('../dist/main.js').main(process.argv);
