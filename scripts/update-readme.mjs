// Rewrites the config reference in README.md from the schema (run after `npm run build`).
import { readFileSync, writeFileSync } from 'node:fs';
import { configReferenceTable } from '../dist/config/reference.js';

const file = new URL('../README.md', import.meta.url);
const readme = readFileSync(file, 'utf8');
const begin = '<!-- config-reference:begin -->';
const end = '<!-- config-reference:end -->';
const start = readme.indexOf(begin);
const stop = readme.indexOf(end);
if (start < 0 || stop < start) throw new Error(`README.md needs ${begin} and ${end} markers`);
writeFileSync(file, `${readme.slice(0, start + begin.length)}\n${configReferenceTable()}\n${readme.slice(stop)}`);
