/**
 * sharp, loaded on first use. Loading it (libvips and its bindings) costs ~0.1 s of CPU, which
 * every stage would otherwise pay at start-up through this package's index, although only
 * decode's libvips path, the contact sheet and the demo data set use it.
 */
import type SharpModule from 'sharp';

let loaded: typeof SharpModule | undefined;

export function loadSharp(): typeof SharpModule {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  loaded ??= require('sharp') as typeof SharpModule;
  return loaded;
}
