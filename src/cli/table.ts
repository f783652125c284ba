/** Plain-text tables for `list` and `ps`: columns padded to their widest cell, the last one left as it is. */

/** The lines of a table: `head`, then one line per row of `rows`, columns two spaces apart. Pure. */
export function tableLines(head: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((c) => c[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((v, i) => (i === cells.length - 1 ? v : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [head, ...rows].map(line);
}
