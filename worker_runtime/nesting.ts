/**
 * How deeply code nests, as Deno's own parsers (swc, in Rust) recurse on it: the type stripper
 * (TypeScript for /execute) and the parse of a `data:` import (isolate.ts syntaxErrorAt). Their
 * stack overflow is no exception to catch: it aborts the whole worker (SIGABRT), measured at
 * ~1,000 nested parentheses or chained arrows on an import's thread and ~3,000-5,000 brackets,
 * arrows or type arguments in the stripper. So such code never reaches them.
 *
 * Brackets, type arguments (`<`/`>`, not `=>`) and arrows are counted wherever they stand, in
 * strings and comments too, so this only ever overestimates; an arrow counts as a level that
 * never closes (`x => y => ...` nests with no bracket). Character codes only, no regular
 * expression (bench/RESULTS.md, idle RSS).
 */
export function nestingOf(code: string, typeArguments = false): number {
  let depth = 0;
  let max = 0;
  let arrows = 0;
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    if (c === 40 || c === 91 || c === 123 || (typeArguments && c === 60)) { // ( [ { <
      if (++depth > max) max = depth;
    } else if (c === 41 || c === 93 || c === 125 || (typeArguments && c === 62 && code.charCodeAt(i - 1) !== 61)) {
      if (depth > 0) depth--;
    } else if (c === 61 && code.charCodeAt(i + 1) === 62) arrows++; // =>
  }
  return max + arrows;
}

/** Deepest code given to the type stripper (it aborted the worker at 3,000-5,000). */
export const MAX_STRIPPED_NESTING = 2000;
/** Deepest code parsed to place a syntax error (an import's thread aborted at ~1,000). */
export const MAX_PROBED_NESTING = 400;
