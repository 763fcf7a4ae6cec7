import { describe, expect, it } from 'vitest';
import { DEFAULT_MIN_LR_RATIO, describeSchedule, learningRate, learningRates, makeSchedule, ScheduleError, type ScheduleSpec } from '../src/train/schedule.ts';

const lr = 3e-4;
const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-15 * Math.max(1, Math.abs(b)));

describe('learning-rate schedules', () => {
  const table: [string, ScheduleSpec, [number, number][]][] = [
    ['constant, no warmup: the first step uses the full rate', { kind: 'constant', lr }, [[0, lr], [1, lr], [1000, lr]]],
    ['constant, warmup 4: lr·(s+1)/4', { kind: 'constant', lr, warmup: 4 }, [[0, lr / 4], [1, lr / 2], [2, (3 * lr) / 4], [3, lr], [4, lr], [99, lr]]],
    ['cosine, no warmup, T=5, default floor 10%', { kind: 'cosine', lr, totalSteps: 5 },
      [[0, lr], [2, (lr + 0.1 * lr) / 2], [4, 0.1 * lr], [5, 0.1 * lr], [50, 0.1 * lr]]],
    ['cosine, warmup 3, T=10, floor 0', { kind: 'cosine', lr, warmup: 3, totalSteps: 10, minLr: 0 },
      [[0, lr / 3], [1, (2 * lr) / 3], [2, lr], [3, lr], [4, (lr * (1 + Math.cos(Math.PI / 6))) / 2], [6, lr / 2], [9, 0], [10, 0]]],
    ['cosine, one decay step (T = W + 1): it uses the full rate', { kind: 'cosine', lr, warmup: 2, totalSteps: 3, minLr: 0 }, [[0, lr / 2], [1, lr], [2, lr], [3, 0]]],
    ['cosine, all warmup (T = W)', { kind: 'cosine', lr, warmup: 2, totalSteps: 2 }, [[0, lr / 2], [1, lr], [2, 0.1 * lr]]],
    ['cosine, T=1, no warmup', { kind: 'cosine', lr, totalSteps: 1 }, [[0, lr], [1, 0.1 * lr]]],
    ['cosine, floor = lr is constant', { kind: 'cosine', lr, totalSteps: 7, minLr: lr }, [[0, lr], [3, lr], [6, lr]]],
  ];
  for (const [name, spec, rows] of table) {
    it(name, () => {
      for (const [s, want] of rows) close(learningRate(spec, s), want);
    });
  }

  it('boundary values are exact (no rounding at the peak or the floor)', () => {
    const spec: ScheduleSpec = { kind: 'cosine', lr: 6e-4, warmup: 7, totalSteps: 1007 };
    expect(learningRate(spec, 6)).toBe(6e-4);
    expect(learningRate(spec, 7)).toBe(6e-4);
    expect(learningRate(spec, 1006)).toBe(6e-4 * DEFAULT_MIN_LR_RATIO);
  });

  it('warmup rises, cosine falls, and stays within [minLr, lr]', () => {
    const spec: ScheduleSpec = { kind: 'cosine', lr: 1e-3, warmup: 10, totalSteps: 200, minLr: 1e-5 };
    const xs = learningRates(spec);
    expect(xs).toHaveLength(200);
    for (let s = 1; s < 10; s++) expect(xs[s]!).toBeGreaterThan(xs[s - 1]!);
    for (let s = 11; s < 200; s++) expect(xs[s]!).toBeLessThan(xs[s - 1]!);
    for (const x of xs) {
      expect(x).toBeGreaterThan(0);
      expect(x).toBeLessThanOrEqual(1e-3);
    }
    expect(Math.min(...xs.slice(10))).toBe(1e-5);
    expect(learningRates({ kind: 'constant', lr: 1 }, 3)).toEqual([1, 1, 1]);
  });

  it('fills defaults and describes itself', () => {
    expect(makeSchedule({ kind: 'cosine', lr: 1, totalSteps: 10 })).toEqual({ kind: 'cosine', lr: 1, warmup: 0, totalSteps: 10, minLr: 0.1 });
    expect(makeSchedule(makeSchedule({ kind: 'constant', lr: 2 }))).toEqual({ kind: 'constant', lr: 2, warmup: 0, totalSteps: Infinity, minLr: 0.2 });
    expect(describeSchedule({ kind: 'cosine', lr: 3e-4, warmup: 100, totalSteps: 1000 })).toBe('cosine lr 0.0003 → 0.00003 over 1000 steps, warmup 100');
    expect(describeSchedule({ kind: 'constant', lr: 0.1 })).toBe('constant lr 0.1');
  });

  it('rejects bad specs and steps with ScheduleError', () => {
    const bad: [ScheduleSpec, RegExp][] = [
      [{ kind: 'constant', lr: 0 }, /learning rate must be finite and > 0/],
      [{ kind: 'constant', lr: Number.NaN }, /learning rate/],
      [{ kind: 'constant', lr, warmup: -1 }, /warmup must be an integer/],
      [{ kind: 'constant', lr, warmup: 1.5 }, /warmup must be an integer/],
      [{ kind: 'cosine', lr }, /needs totalSteps/],
      [{ kind: 'cosine', lr, totalSteps: 5, warmup: 6 }, /longer than totalSteps/],
      [{ kind: 'cosine', lr, totalSteps: 0 }, /totalSteps must be an integer ≥ 1/],
      [{ kind: 'cosine', lr, totalSteps: 5, minLr: 2 * lr }, /minLr must be in/],
      [{ kind: 'linear' as 'cosine', lr, totalSteps: 5 }, /unknown schedule 'linear'/],
    ];
    for (const [spec, re] of bad) {
      expect(() => learningRate(spec, 0)).toThrow(ScheduleError);
      expect(() => learningRate(spec, 0)).toThrow(re);
    }
    expect(() => learningRate({ kind: 'constant', lr }, -1)).toThrow(/step must be an integer ≥ 0/);
    expect(() => learningRate({ kind: 'constant', lr }, 0.5)).toThrow(/step must be an integer ≥ 0/);
    expect(() => learningRates({ kind: 'constant', lr })).toThrow(/number of steps/);
  });
});
