/**
 * Pure formatting for the `companion pull` display: the live progress line, the header and human sizes.
 * No I/O: each function takes values and a terminal width and returns text that fits in it.
 */

/** Spinner frames drawn every ~100 ms until the first byte arrives (ASCII: every terminal has them). */
export const SPINNER_FRAMES = ['|', '/', '-', '\\'] as const;

/** Erase from the cursor to the end of the line (CSI K), so a shorter redraw leaves no stale text. */
export const CLEAR_TO_EOL = '\x1b[K';

/** `1536` → `1.5 KiB`; bytes below 1 KiB as `N B`. */
export function humanBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * The usable width of a terminal line: one column less than the terminal's, because writing the last
 * column makes some terminals wrap on the next character. Unknown or silly widths count as 80.
 */
export function usableWidth(columns: number | undefined): number {
  const width = columns !== undefined && Number.isFinite(columns) && columns >= 10 ? Math.floor(columns) : 80;
  return width - 1;
}

/** `text` cut to `max` characters, ending in `…` when cut. */
export function fit(text: string, max: number): string {
  if (max <= 0) return '';
  if (text.length <= max) return text;
  return max === 1 ? '…' : `${text.slice(0, max - 1)}…`;
}

export interface ProgressFigures {
  readonly bytes: number;
  readonly total: number;
  readonly bytesPerSecond: number;
  readonly etaSeconds: number | null;
}

/**
 * The live progress line (without `\r` and clear-to-end): a bar when there is room, percent, sizes,
 * rate and ETA, dropping the bar, then the ETA, then the rate as the terminal narrows. Never longer than
 * `usableWidth(columns)`.
 */
export function formatProgressLine(figures: ProgressFigures, columns: number | undefined): string {
  const width = usableWidth(columns);
  const share = figures.total > 0 ? Math.min(1, figures.bytes / figures.total) : 0;
  const percent = `${Math.floor(share * 100)}%`;
  const sizes = `${humanBytes(figures.bytes)}/${humanBytes(figures.total)}`;
  const rate = `${humanBytes(figures.bytesPerSecond)}/s`;
  const eta = figures.etaSeconds !== null ? `ETA ${figures.etaSeconds}s` : '';
  const candidates = [[percent, sizes, rate, eta], [percent, sizes, rate], [percent, sizes], [percent]].map(
    (parts) => `  ${parts.filter((p) => p.length > 0).join('  ')}`,
  );
  const figuresText = candidates.find((c) => c.length <= width) ?? fit(candidates.at(-1)!, width);
  // The bar takes what is left (at most 30 cells); below 8 cells it says nothing and is left out.
  const barCells = Math.min(30, width - figuresText.length - 4);
  if (barCells < 8) return figuresText;
  const filled = Math.round(share * barCells);
  return `  [${'#'.repeat(filled)}${'.'.repeat(barCells - filled)}]${figuresText}`;
}

/** The spinner line shown until the first byte: `  | connecting to the model host…`, fitted. */
export function formatSpinnerLine(frame: number, columns: number | undefined): string {
  return fit(`  ${SPINNER_FRAMES[frame % SPINNER_FRAMES.length]} connecting to the model host…`, usableWidth(columns));
}

/**
 * The header, `Pulling NAME (ID, SIZE) from the model host…`, fitted: the model name is elided first,
 * then the tail of the line.
 */
export function formatHeader(name: string, id: string, size: number, columns: number | undefined): string {
  const width = usableWidth(columns);
  const line = (n: string): string => `Pulling ${n} (${id}, ${humanBytes(size)}) from the model host…`;
  const full = line(name);
  if (full.length <= width) return full;
  const room = name.length - (full.length - width);
  if (room >= 8) return line(fit(name, room));
  const short = `Pulling ${id} (${humanBytes(size)})…`;
  return fit(short.length <= width ? short : `Pulling ${id}`, width);
}
