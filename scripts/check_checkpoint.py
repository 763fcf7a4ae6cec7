#!/usr/bin/env python3
"""Check that a semfreeze checkpoint loads in Hugging Face transformers and gives our logits.

Usage:
  python scripts/check_checkpoint.py CHECKPOINT_DIR [--trace TRACE.safetensors] [--tokens 1,2,3] [--tol 1e-4]

Loads CHECKPOINT_DIR with GPT2LMHeadModel.from_pretrained (float32, eager attention) and fails on
any missing, unexpected or mismatched key. Then compares the logits and every hidden state with a
`semfreeze trace` of the same checkpoint: the one given with --trace, or one this script makes by
running `npx tsx bin/semfreeze.ts trace --model CHECKPOINT_DIR --tokens ...` from the repository root.
Exit status 0 when everything matches within --tol (relative L2 error), 1 otherwise.

Needs torch, transformers and safetensors, e.g.:
  python3 -m venv /tmp/venv-hf && /tmp/venv-hf/bin/pip install torch transformers safetensors
Not run by the test suite.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double().flatten()
    b = b.double().flatten()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('checkpoint')
    ap.add_argument('--trace', help='a semfreeze trace .safetensors of CHECKPOINT (default: make one)')
    ap.add_argument('--tokens', default='1,7,42,3,99,5,11,200,17,64,8,2,300,12,77,31', help='token ids for the trace this script makes')
    ap.add_argument('--tol', type=float, default=1e-4)
    args = ap.parse_args()

    model, info = GPT2LMHeadModel.from_pretrained(
        args.checkpoint, output_loading_info=True, torch_dtype=torch.float32, attn_implementation='eager')
    model.eval()
    failures = []
    for kind in ('missing_keys', 'unexpected_keys', 'mismatched_keys', 'error_msgs'):
        items = list(info.get(kind, []) or [])
        print(f'{kind}: {items if items else "none"}')
        if items:
            failures.append(f'{kind}: {items}')

    trace = args.trace
    tmp = None
    if trace is None:
        tmp = tempfile.TemporaryDirectory()
        trace = os.path.join(tmp.name, 'trace.safetensors')
        cmd = ['npx', 'tsx', 'bin/semfreeze.ts', 'trace', '--model', os.path.abspath(args.checkpoint), '--tokens', args.tokens, '--out', trace]
        print('running:', ' '.join(cmd))
        subprocess.run(cmd, cwd=REPO, check=True, stderr=subprocess.DEVNULL)
    t = load_file(trace)
    ids = t['input_ids'].long().unsqueeze(0)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    n = model.config.n_layer
    pairs = [('logits', out.logits[0], t['logits'])] + [
        (f'hidden_states.{k}', out.hidden_states[k][0], t[f'hidden_states.{k}']) for k in range(n + 1)]
    for name, ref, ours in pairs:
        e = rel_error(ours, ref)
        ok = ours.shape == ref.shape and e <= args.tol
        print(f'{name:18s} shape {tuple(ours.shape)}  rel error {e:.3e}  {"ok" if ok else "FAIL"}')
        if not ok:
            failures.append(f'{name}: rel error {e:.3e} (shape {tuple(ours.shape)} vs {tuple(ref.shape)})')
    if tmp:
        tmp.cleanup()
    if failures:
        print('FAILED:\n  ' + '\n  '.join(failures))
        return 1
    print(f'OK: {args.checkpoint} loads in transformers with no missing/unexpected keys and matches the semfreeze trace within {args.tol}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
