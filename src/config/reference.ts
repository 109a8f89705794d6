import { OPTIONS, formatValue } from './options.js';

/** The README's config reference table, generated from the schema. */
export function configReferenceTable(): string {
  const rows = OPTIONS.map((o) => {
    const shown = formatValue(o.defaultValue, o.kind);
    const choices = o.choices ? ` One of: ${o.choices.map((c) => `\`${c}\``).join(', ')}.` : '';
    const type = o.kind === 'list' ? 'list' : o.kind === 'enum' ? 'string' : o.kind;
    return `| \`${o.key}\` | \`${o.flag}${o.kind === 'boolean' ? '' : ` ${o.arg}`}\` | ${type} | ${shown === '' ? '—' : `\`${shown}\``} | ${o.description.replace(/\|/g, '\\|')}${choices} |`;
  });
  return ['| key | flag | type | default | meaning |', '|---|---|---|---|---|', ...rows].join('\n');
}
