// Numbers from option text (CLI flags, the page's query parameters): plain decimal only, one clear error.
import { UserError } from './errors.ts';

// Plain decimal only: Number() would also take '0x10', '1e3', '' (= 0) and ' 7 '.
const DECIMAL_INT = /^[+-]?\d+$/;
const DECIMAL_FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

export function parseIntOption(name: string, value: string, min = 0): number {
  const n = Number(value);
  if (!DECIMAL_INT.test(value) || !Number.isSafeInteger(n) || n < min) throw new UserError(`${name} must be an integer ≥ ${min}, got '${value}'`);
  return n;
}

/** A finite decimal number ≥ `min` (or > `min` when `exclusive`). */
export function parseFloatOption(name: string, value: string, min = -Infinity, exclusive = false): number {
  const n = Number(value);
  const bound = exclusive ? `> ${min}` : `≥ ${min}`;
  if (!DECIMAL_FLOAT.test(value) || !Number.isFinite(n)) throw new UserError(`${name} must be a number${min > -Infinity ? ` ${bound}` : ''}, got '${value}'`);
  if (exclusive ? !(n > min) : !(n >= min)) throw new UserError(`${name} must be ${bound}, got '${value}'`);
  return n;
}
