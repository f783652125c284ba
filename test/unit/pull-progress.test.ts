// The `companion pull` display formatter (src/cli/progress.ts): pure, so every width is checked directly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatHeader, formatProgressLine, formatSpinnerLine, humanBytes } from '../../src/cli/progress.js';

const MIB = 1024 * 1024;
const cases = [
  { bytes: 0, total: 3 * MIB, bytesPerSecond: 0, etaSeconds: null },
  { bytes: 1.5 * MIB, total: 3 * MIB, bytesPerSecond: 12 * MIB, etaSeconds: 7 },
  { bytes: 1234 * MIB, total: 4321 * MIB, bytesPerSecond: 987 * 1024, etaSeconds: 123_456 },
  { bytes: 4321 * MIB, total: 4321 * MIB, bytesPerSecond: 5 * MIB, etaSeconds: 0 },
];

for (const width of [40, 80, 120]) {
  test(`formatProgressLine() is never longer than ${width} columns and shows the percent and sizes`, () => {
    for (const figures of cases) {
      const line = formatProgressLine(figures, width);
      assert.ok(line.length <= width, `${line.length} > ${width}: ${line}`);
      assert.ok(line.length < width, 'the last column stays free (no pending wrap)');
      const percent = Math.floor((figures.bytes / figures.total) * 100);
      assert.ok(line.includes(`${percent}%`), line);
      assert.ok(line.includes(`${humanBytes(figures.bytes)}/${humanBytes(figures.total)}`), line);
      assert.ok(!line.includes('\n') && !line.includes('\r'), line);
    }
  });

  test(`formatHeader() and formatSpinnerLine() fit in ${width} columns, eliding a long model name`, () => {
    const header = formatHeader(`A very long model name ${'x'.repeat(200)}`, 'tiny-demo', 3 * MIB, width);
    assert.ok(header.length < width, header);
    assert.ok(header.includes('tiny-demo'), header);
    const short = formatHeader('Tiny', 'tiny', MIB, width);
    if (width >= 80) assert.equal(short, 'Pulling Tiny (tiny, 1.0 MiB) from the model host…');
    else assert.ok(short.length < width && short.includes('tiny'), short);
    for (let frame = 0; frame < 8; frame += 1) assert.ok(formatSpinnerLine(frame, width).length < width);
  });
}

test('formatProgressLine() shows a bar when there is room and drops it on a narrow terminal', () => {
  assert.match(formatProgressLine(cases[1]!, 120), /\[#+\.+\]/);
  assert.doesNotMatch(formatProgressLine(cases[1]!, 40), /\[/);
  // An unknown width counts as 80.
  assert.equal(formatProgressLine(cases[1]!, undefined), formatProgressLine(cases[1]!, 80));
});

test('humanBytes() uses binary units with one decimal', () => {
  assert.equal(humanBytes(512), '512 B');
  assert.equal(humanBytes(1536), '1.5 KiB');
  assert.equal(humanBytes(3 * MIB), '3.0 MiB');
  assert.equal(humanBytes(5 * 1024 * MIB), '5.0 GiB');
});
