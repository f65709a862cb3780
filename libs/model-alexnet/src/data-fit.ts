import { InputError } from '@alexnet-stream/core';
/**
 * Does a data set fit a model's classes? One rule for every command that runs a model on
 * labelled data (train, validate), so that they cannot disagree:
 *
 * - a set that names its classes (prepare writes class names) must name exactly the model's
 *   number of classes: a 6-class model on 3-class data is a different task, not a subset;
 * - every set's labels (0..labelCount-1) must be classes of the model (a set without names may
 *   lack the last classes: a validation set need not hold every class).
 */

export interface LabelledSet {
  /** The set's name in messages, e.g. `"val" set`. */
  name: string;
  /** Labels are 0..labelCount-1 (the class count when the set names its classes). */
  labelCount: number;
  classNames?: string[];
}

/** Throws an InputError naming `where` (a file) and the set when the data does not fit `modelClasses` classes. */
export function checkDataClasses(sets: LabelledSet[], modelClasses: number, where: string, model: string): void {
  for (const set of sets) {
    if (set.classNames && set.classNames.length !== modelClasses) {
      throw new InputError(
        `${where}: the ${set.name} names ${set.classNames.length} classes but ${model} has ${modelClasses}; use data with the model's classes (or a model for these)`,
        { code: 'ERR_DATA_MISMATCH' },
      );
    }
    if (set.labelCount > modelClasses) {
      throw new InputError(`${where}: the ${set.name} has labels 0..${set.labelCount - 1} (${set.labelCount} classes) but ${model} has ${modelClasses}`, {
        code: 'ERR_DATA_MISMATCH',
      });
    }
  }
}
