// Unit tests of the UI's trace model (`ui/model.js`), run by `node --test` (no browser).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { buildTrace, buildLogs, criticalPath, compareTraces, severityRange } from '../../ui/model.js';

const fixture = (name) => JSON.parse(readFileSync(new URL(`../../testdata/ui/${name}`, import.meta.url)));
const byName = (trace, name) => trace.spans.find((s) => s.name === name);
const ms = (segs) => segs.map(([a, b]) => [a / 1000, b / 1000]);

test('the tree, depth and summary of the patient-report fixture', () => {
  const t = buildTrace(fixture('patient-report.json'));
  assert.equal(t.spans.length, 7);
  assert.equal(t.depth, 3);
  assert.equal(t.errors, 1);
  assert.equal(t.duration, 150_000);
  assert.equal(t.rootService, 'gateway');
  assert.deepEqual(t.order.map((i) => t.spans[i].name), [
    'POST /reports', 'GET /patients/{id}', 'epro.Reports/Submit', 'INSERT reports', 'SELECT patients',
    'audit', 'send-sms']);
});

test('critical path: hand-computed, with an async child that outlives the root', () => {
  const t = buildTrace(fixture('patient-report.json'));
  const cp = criticalPath(t);
  const on = [...cp.keys()].map((i) => t.spans[i].name).sort();
  assert.deepEqual(on, ['GET /patients/{id}', 'POST /reports', 'SELECT patients', 'epro.Reports/Submit', 'send-sms']);
  assert.deepEqual(ms(cp.get(byName(t, 'POST /reports').i)), [[0, 5], [20, 22], [80, 90]]);
  assert.deepEqual(ms(cp.get(byName(t, 'epro.Reports/Submit').i)), [[22, 35], [70, 80]]);
  assert.deepEqual(ms(cp.get(byName(t, 'SELECT patients').i)), [[35, 70]]);
  assert.deepEqual(ms(cp.get(byName(t, 'send-sms').i)), [[90, 150]]);
  assert.deepEqual(ms(cp.get(byName(t, 'GET /patients/{id}').i)), [[5, 20]]);
  // The path's self time adds up to the trace's duration.
  const total = [...cp.values()].flat().reduce((sum, [a, b]) => sum + b - a, 0);
  assert.equal(total, t.duration);
});

test('missing parents and parent cycles become roots; nothing is lost', () => {
  const span = (id, parent, start) => ({ spanId: id, parentSpanId: parent, name: id,
    startTimeUnixNano: String(start * 1000), endTimeUnixNano: String(start * 1000 + 500) });
  const json = { resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ spans: [
    span('aa', 'bb', 1), span('bb', 'aa', 2), span('cc', 'ffff', 3), span('dd', 'dd', 4)] }] }] };
  const t = buildTrace(json);
  assert.equal(t.order.length, 4);
  assert.deepEqual(t.roots.map((i) => t.spans[i].id).sort(), ['aa', 'cc', 'dd']);
  assert.equal(t.spans[0].service, 'unknown_service');
  assert.equal(criticalPath(t).size >= 1, true);
});

test('nanosecond times beyond 2^53 keep their precision relative to the trace start', () => {
  const json = { resourceSpans: [{ scopeSpans: [{ spans: [
    { spanId: '01', startTimeUnixNano: '1795000000000000001', endTimeUnixNano: '1795000000000001500' }] }] }] };
  const t = buildTrace(json);
  assert.equal(t.spans[0].start, 0);
  assert.equal(t.spans[0].end, 1.499);
  assert.ok(Math.abs(t.startMs - 1795000000000) < 1e-3);
});

test('compare lists what was added, missing, slower and faster', () => {
  const rows = compareTraces(buildTrace(fixture('patient-report.json')), buildTrace(fixture('patient-report-slow.json')));
  const change = Object.fromEntries(rows.map((r) => [r.name, r.change]));
  assert.deepEqual(change, {
    'POST /reports': 'slower',
    'GET /patients/{id}': 'same',
    'epro.Reports/Submit': 'slower',
    'INSERT reports': 'missing',
    'SELECT patients': 'slower',
    'retry INSERT reports': 'added',
    audit: 'missing',
    'send-sms': 'faster',
  });
});

test('time axis ticks are round, few and never repeat a label', async () => {
  const { timeTicks } = await import('../../ui/format.js');
  const at = (iso) => new Date(iso).getTime();
  for (const [from, to] of [
    ['2026-12-02T10:00:00.000', '2026-12-02T10:00:00.800'], // under a second
    ['2026-12-02T10:00:01', '2026-12-02T10:00:03'], // two seconds: four cuts repeated seconds before
    ['2026-12-02T10:00', '2026-12-02T11:00'],
    ['2026-12-01T20:00', '2026-12-02T04:00'], // crosses midnight
    ['2026-11-01T00:00', '2026-12-02T00:00'],
    ['2018-12-13T14:51', '2026-12-02T10:00'], // years
  ]) {
    const ticks = timeTicks(at(from), at(to));
    assert.ok(ticks.length >= 1 && ticks.length <= 5, `${from}..${to}: ${ticks.length} ticks`);
    const labels = ticks.map((t) => t.label);
    assert.equal(new Set(labels).size, labels.length, `${from}..${to}: ${labels}`);
    assert.ok(ticks.every((t) => t.at >= at(from) && t.at <= at(to)), `${from}..${to}: ticks inside the range`);
  }
  const crossing = timeTicks(at('2026-12-01T20:00'), at('2026-12-02T04:00')).map((t) => t.label);
  assert.ok(crossing.some((l) => l.startsWith('12-02 ')), `the new day is named: ${crossing}`);
  assert.deepEqual(timeTicks(at('2026-12-02T10:00'), at('2026-12-02T11:00')).map((t) => t.label),
    ['10:00', '10:15', '10:30', '10:45', '11:00']);
  // One second exactly, both ends on a tick: still at most five.
  assert.ok(timeTicks(at('2026-12-02T10:00:00'), at('2026-12-02T10:00:01')).length <= 5);
  assert.deepEqual(timeTicks(5, 1), [], 'an empty range has no ticks');
  // Whole local hours and days, whatever the time zone.
  const hours = timeTicks(at('2026-12-02T03:10'), at('2026-12-02T09:50'));
  assert.ok(hours.every((t) => t.label.endsWith(':00')), `local whole hours: ${hours.map((t) => t.label)}`);
});

test('log records: flat, by time, placed on the trace and its spans', () => {
  const t = buildTrace(fixture('patient-report.json'));
  const root = t.spans[t.roots[0]];
  const [us, ns] = t.base;
  const at = (offsetUs) => String(BigInt(us + offsetUs) * 1000n + BigInt(ns));
  const logs = buildLogs({
    resourceLogs: [{
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'gateway' } }] },
      scopeLogs: [{ logRecords: [
        { timeUnixNano: at(2000), severityNumber: 17, body: { stringValue: 'later' }, spanId: root.id.toUpperCase() },
        { timeUnixNano: '0', observedTimeUnixNano: at(1000), severityNumber: 9, severityText: 'Info', body: { kvlistValue: { values: [{ key: 'k', value: { intValue: '3' } }] } } },
      ] }],
    }],
  }, t);
  assert.deepEqual(logs.map((l) => [l.time, l.level, l.range, l.body, l.span]), [
    [1000, 'Info', 'info', '{"k":"3"}', -1],
    [2000, 'ERROR', 'error', 'later', root.i],
  ]);
  assert.equal(logs[1].service, 'gateway');
  assert.equal(severityRange(0), 'unspecified');
  assert.equal(severityRange(24), 'fatal');
});
