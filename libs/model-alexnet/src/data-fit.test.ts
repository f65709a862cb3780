import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkDataClasses } from './data-fit';

test("checkDataClasses: named classes must be exactly the model's; labels must be within them", () => {
  const names = (n: number) => Array.from({ length: n }, (_, i) => `c${i}`);
  checkDataClasses([{ name: '"val" set', labelCount: 3, classNames: names(3) }], 3, 'd/index.json', 'the model');
  checkDataClasses([{ name: '"val" set', labelCount: 2 }], 3, 'd/index.json', 'the model'); // a set without names may lack the last classes
  assert.throws(
    () => checkDataClasses([{ name: '"val" set', labelCount: 3, classNames: names(3) }], 6, 'd/index.json', 'the model'),
    /d\/index\.json: the "val" set names 3 classes but the model has 6/,
  );
  assert.throws(
    () => checkDataClasses([{ name: '"train" set', labelCount: 4 }], 3, 'd/index.json', 'the model'),
    /the "train" set has labels 0\.\.3 \(4 classes\) but the model has 3/,
  );
  assert.throws(
    () =>
      checkDataClasses(
        [
          { name: '"a" set', labelCount: 3 },
          { name: '"b" set', labelCount: 3, classNames: names(2) },
        ],
        3,
        'x',
        'the model',
      ),
    /the "b" set names 2 classes/,
  );
});
