/**
 * How deeply code nests, as Deno's own parsers (swc, in Rust) recurse on it: the type stripper
 * (TypeScript for /execute) and the parse of a `data:` import (isolate.ts syntaxErrorAt). Their
 * stack overflow is no exception to catch: it aborts the whole worker (SIGABRT), measured at
 * ~1,000 nested parentheses or chained arrows on an import's thread and ~3,000-5,000 brackets,
 * arrows or type arguments in the stripper. So such code never reaches them.
 *
 * Brackets nest as they open and close, a template's `${` too. What nests without a bracket
 * counts one level each at the bracket level it stands in: a type argument (`<`, with
 * `typeArguments`) until its `>` or `;`; an arrow (`x => y => ...`) and an operator or prefix
 * keyword (`!!!...`, `new new ...`, `await await ...`, labels `a:b:...`, `1+1+...`) until a `,` or
 * `;`, or the end of a line that does not end in one of them. A bracket closing drops its level's
 * count. So sibling arrows (`[x => 1, y => 2]`) and comparisons on lines of their own count once;
 * chains count each link, across lines too. Strings and comments are skipped. Character codes
 * only, no regular expression (bench/RESULTS.md, idle RSS).
 */
const PREFIX_WORDS = new Set(["new", "await", "typeof", "void", "delete", "yield", "extends"]);

function isWordCode(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 36 || c > 127;
}

// ! % & * + - / : = ? ^ | ~ (and < > when they are no type arguments)
function isOperator(c: number, typeArguments: boolean): boolean {
  return c === 33 || c === 37 || c === 38 || c === 42 || c === 43 || c === 45 || c === 47 || c === 58 ||
    c === 61 || c === 63 || c === 94 || c === 124 || c === 126 || (!typeArguments && (c === 60 || c === 62));
}

/** Where a string, comment or template that starts at `i` ends (the index of its last character),
 * or -1 when none starts there. A template's `${` is code: scanned by `nestingOf` itself. */
function skipped(code: string, i: number): number {
  const c = code.charCodeAt(i);
  const next = code.charCodeAt(i + 1);
  if (c === 34 || c === 39) { // a string: to its quote or the line's end
    for (i++; i < code.length; i++) {
      const t = code.charCodeAt(i);
      if (t === 92) i++;
      else if (t === c || t === 10) return i;
    }
    return code.length;
  }
  if (c === 47 && next === 47) { // a line comment, to before its newline
    const end = code.indexOf("\n", i);
    return end < 0 ? code.length : end - 1;
  }
  if (c === 47 && next === 42) { // a block comment
    const end = code.indexOf("*/", i + 2);
    return end < 0 ? code.length : end + 1;
  }
  return -1;
}

export function nestingOf(code: string, typeArguments = false): number {
  const angles: number[] = [0]; // per open bracket level: its open type arguments
  const chain: number[] = [0]; // per open bracket level: its arrows, operators and prefix words
  const template: boolean[] = [false]; // per level: a template's ${ opened it
  let current = 0; // open brackets + every level's counts
  let max = 0;
  let carry = false; // the last token was an arrow, an operator or a prefix word: the line goes on
  const n = code.length;
  let i = 0;
  const rest = (top: number) => {
    current -= chain[top];
    chain[top] = 0;
  };
  const inTemplate = () => { // from just after a backtick or a ${...}'s }: to its backtick or next ${
    for (; i < n; i++) {
      const t = code.charCodeAt(i);
      if (t === 92) i++;
      else if (t === 96) return;
      else if (t === 36 && code.charCodeAt(i + 1) === 123) {
        i++;
        angles.push(0), chain.push(0), template.push(true);
        current++;
        return;
      }
    }
  };
  for (; i < n; i++) {
    const c = code.charCodeAt(i);
    const top = chain.length - 1;
    const end = skipped(code, i);
    if (end >= 0) {
      i = end;
      continue;
    }
    if (c === 32 || c === 9 || c === 13) continue;
    let chained = false;
    if (c === 96) {
      i++;
      inTemplate();
    } else if (c === 40 || c === 91 || c === 123) { // ( [ {
      angles.push(0), chain.push(0), template.push(false);
      current++;
    } else if (c === 41 || c === 93 || c === 125) { // ) ] }
      if (top > 0) {
        current -= 1 + (angles.pop() as number) + (chain.pop() as number);
        if (template.pop()) {
          i++;
          inTemplate();
        }
      }
    } else if (c === 61 && code.charCodeAt(i + 1) === 62) { // =>
      chain[top]++;
      current++;
      i++;
      chained = true;
    } else if (typeArguments && c === 60) { // <
      angles[top]++;
      current++;
    } else if (typeArguments && c === 62) { // >
      if (angles[top] > 0) {
        angles[top]--;
        current--;
      }
    } else if (c === 59) { // ;
      current -= angles[top];
      angles[top] = 0;
      rest(top);
    } else if (c === 44) { // ,
      rest(top);
    } else if (c === 10) {
      if (!carry) rest(top);
      chained = carry;
    } else if (isOperator(c, typeArguments)) {
      chain[top]++;
      current++;
      chained = true;
    } else if (isWordCode(c)) {
      let j = i + 1;
      while (j < n && isWordCode(code.charCodeAt(j))) j++;
      if (j - i <= 7 && PREFIX_WORDS.has(code.slice(i, j))) {
        chain[top]++;
        current++;
        chained = true;
      }
      i = j - 1;
    }
    carry = chained;
    if (current > max) max = current;
  }
  return max;
}

/** Deepest code given to the type stripper (it aborted the worker at 3,000-5,000). */
export const MAX_STRIPPED_NESTING = 2000;
/** Deepest code parsed to place a syntax error (an import's thread aborted at ~1,000). */
export const MAX_PROBED_NESTING = 400;
/** Longest code parsed to place a syntax error: what this count does not see recurses at two
 * characters a level at least (a member chain, x.a.a...: the import's thread aborted at 35,000
 * links, 70,000 characters; it held at 25,000). */
export const MAX_PROBED_CHARS = 20_000;

/** Where a template literal that starts with the backtick at `i` ends (its closing backtick),
 * its `${...}` expressions (strings, comments and templates of their own inside) skipped whole. */
function templateEnd(code: string, i: number): number {
  for (i++; i < code.length; i++) {
    const t = code.charCodeAt(i);
    if (t === 92) i++;
    else if (t === 96) return i;
    else if (t === 36 && code.charCodeAt(i + 1) === 123) {
      let depth = 0;
      for (i += 2; i < code.length; i++) {
        const c = code.charCodeAt(i);
        const end = c === 96 ? templateEnd(code, i) : skipped(code, i);
        if (end >= 0) i = end;
        else if (c === 123) depth++;
        else if (c === 125 && depth-- === 0) break;
      }
    }
  }
  return code.length;
}

/** The first decorator in `code` (`@name` where a class member, a class or a parameter starts:
 * after `{`, `}`, `;`, `(`, `,`, a newline or at the start), outside strings, comments and
 * templates: its index and its text; null when there is none. */
export function firstDecorator(code: string): { index: number; name: string } | null {
  let before = 10; // as if after a newline
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    const end = c === 96 ? templateEnd(code, i) : skipped(code, i);
    if (end >= 0) {
      i = end;
      before = 0;
      continue;
    }
    if (c === 32 || c === 9 || c === 13) continue;
    if (c === 64 && isWordCode(code.charCodeAt(i + 1)) &&
      (before === 10 || before === 123 || before === 125 || before === 59 || before === 40 || before === 44)) {
      let j = i + 1;
      while (j < code.length && (isWordCode(code.charCodeAt(j)) || code.charCodeAt(j) === 46)) j++;
      return { index: i, name: code.slice(i, j) };
    }
    before = c;
  }
  return null;
}
