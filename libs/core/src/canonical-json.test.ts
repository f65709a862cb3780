import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson, sameJson } from './canonical-json';

test('canonicalJson sorts keys at every level, keeps array order, drops undefined members', () => {
  assert.equal(canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] }), '{"a":[2,{"c":4,"d":3}],"b":1}');
  assert.equal(canonicalJson({ z: undefined, y: null }), '{"y":null}');
  assert.equal(canonicalJson([undefined, 1]), '[null,1]'); // as JSON.stringify writes it
  assert.equal(canonicalJson('a"b'), '"a\\"b"');
  // Every value JSON.stringify writes the same way (no objects): the same text.
  for (const v of [0, -1.5, 'x', true, null, [1, 'a']]) assert.equal(canonicalJson(v), JSON.stringify(v));
});

test('sameJson ignores key order but not values or array order', () => {
  assert.ok(sameJson({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }));
  assert.ok(!sameJson({ a: 1, b: { c: [1, 2] } }, { a: 1, b: { c: [2, 1] } }));
  assert.ok(!sameJson({ a: 1 }, { a: 1, b: 2 }));
});
