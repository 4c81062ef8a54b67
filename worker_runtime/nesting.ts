/**
 * How deeply code nests, as Deno's own parsers (swc, in Rust) recurse on it: the type stripper
 * (TypeScript for /execute) and the parse of a `data:` import (isolate.ts syntaxErrorAt). Their
 * stack overflow is no exception to catch: it aborts the whole worker (SIGABRT), measured at
 * ~1,000 nested parentheses or chained arrows on an import's thread and ~3,000-5,000 brackets,
 * arrows or type arguments in the stripper. So such code never reaches them.
 *
 * Brackets nest as they open and close (counted in strings and comments too).
 * Arrows and type arguments (`<`, with `typeArguments`) nest without a bracket of their own
 * (`x => y => ...`, `A<B<C>>`): each counts one level at the bracket level it stands in, until a
 * `>` closes a type argument, or a `,` or `;` (a newline at the top level) ends that expression,
 * or its bracket closes. So sibling arrows (`[x => 1, y => 2]`) and comparisons (`if (n < i)`)
 * count once, chains count each link. Character codes only, no regular expression
 * (bench/RESULTS.md, idle RSS).
 */
export function nestingOf(code: string, typeArguments = false): number {
  const soft: number[] = [0]; // per open bracket level: its arrows and type arguments
  let current = 0; // open brackets + every level's soft count
  let max = 0;
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    const top = soft.length - 1;
    if (c === 40 || c === 91 || c === 123) { // ( [ {
      soft.push(0);
      current++;
    } else if (c === 41 || c === 93 || c === 125) { // ) ] }
      if (top > 0) current -= 1 + (soft.pop() as number);
    } else if (c === 61 && code.charCodeAt(i + 1) === 62) { // =>
      soft[top]++;
      current++;
      i++;
    } else if (typeArguments && c === 60) { // <
      soft[top]++;
      current++;
    } else if (typeArguments && c === 62) { // >
      if (soft[top] > 0) {
        soft[top]--;
        current--;
      }
    } else if (c === 44 || c === 59 || (c === 10 && top === 0)) { // , ; newline at the top level
      current -= soft[top];
      soft[top] = 0;
    }
    if (current > max) max = current;
  }
  return max;
}

/** Deepest code given to the type stripper (it aborted the worker at 3,000-5,000). */
export const MAX_STRIPPED_NESTING = 2000;
/** Deepest code parsed to place a syntax error (an import's thread aborted at ~1,000). */
export const MAX_PROBED_NESTING = 400;
