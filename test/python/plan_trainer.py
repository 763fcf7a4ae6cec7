"""Hugging Face Trainer with a semfreeze plan (test/plan-export.test.ts runs this; it asserts nothing
itself and prints, as its last line, a JSON array with one object of measurements per case).

    echo '[{"plan": "PLAN.json", "model": "MODEL_DIR", "checkpointing": false}, ...]' | python test/python/plan_trainer.py

A case with "refusal": true only applies the plan and returns {"refused": the PlanError's message}.

1. Trainer runs 3 AdamW steps (weight decay on) on random ids with the plan applied by
   scripts/semfreeze_plan.py; every parameter is compared bit for bit before and after.
2. While the loss is computed, a saved_tensors_hooks pack hook records every tensor autograd keeps for
   backward, with the phase it was saved in: 'prefix' from the base model's start until block K starts
   (the final norm when K = N), 'suffix' after. Forward hooks record whether the output of any prefix
   module (embeddings, blocks 0..K-1) takes part in autograd (requires_grad or a grad_fn).
   model.enable_input_require_grads() is on, as transformers turns it on for gradient checkpointing, so
   that requires_grad alone would not keep the prefix out of autograd.
3. The control: the same model with only the plan's requires_grad flags (no hooks), one forward and
   backward under the same recorders, to show what they see when the prefix is recorded.
"""

import gc
import json
import os
import sys
import tempfile
import weakref

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from semfreeze_plan import apply_plan, load_plan  # noqa: E402

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)


class Saved:
    """What the pack hook hands autograd instead of the tensor, so that we can tell when it is let go."""

    __slots__ = ("t", "__weakref__")

    def __init__(self, t):
        self.t = t


class Recorder:
    """Phase of the forward (prefix / suffix) and what autograd saves, and keeps, in each."""

    def __init__(self, model, plan):
        self.phase = None
        self.saves = {"prefix": 0, "suffix": 0}
        self.kept = {"prefix": [], "suffix": []}
        self.prefix_kept_shapes = []
        self.prefix_outputs_in_autograd = []
        self.refs = []
        names = plan["names"]
        K = plan["boundary"]["freeze"]
        n = plan["model"]["nLayer"]
        self.embedding_names = set(names["embeddingModules"])
        base = model.get_submodule(names["baseModel"])
        layer = lambda i: model.get_submodule(names["layerPattern"].replace("{i}", str(i)))  # noqa: E731
        boundary = layer(K) if K < n else model.get_submodule(names["finalNormModule"])
        self.handles = [
            base.register_forward_pre_hook(lambda m, a: self._set("prefix")),
            boundary.register_forward_pre_hook(lambda m, a: self._set("suffix")),
        ]
        if K > 0:
            # The prefix ends with block K-1 (gradient checkpointing saves block K's input before its hooks run).
            self.handles.append(layer(K - 1).register_forward_hook(lambda m, a, o: self._set("suffix")))
        prefix_modules = [names["layerPattern"].replace("{i}", str(i)) for i in range(K)] + list(names["embeddingModules"])
        for name in prefix_modules:
            self.handles.append(model.get_submodule(name).register_forward_hook(self._output_check(name)))

    def _set(self, phase):
        self.phase = phase

    def _output_check(self, name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            # An embedding's output may be made to require grad by enable_input_require_grads (a leaf:
            # nothing recorded); what matters is a grad_fn, or a block's output requiring grad.
            if out.grad_fn is not None or (out.requires_grad and name not in self.embedding_names):
                self.prefix_outputs_in_autograd.append(name)

        return hook

    def pack(self, t):
        s = Saved(t)
        if self.phase is not None:
            self.saves[self.phase] += 1
            self.refs.append((self.phase, weakref.ref(s), list(t.shape)))
        return s

    def count_kept(self):
        """After a forward, before its backward: which saved tensors autograd still holds."""
        gc.collect()
        for phase, ref, shape in self.refs:
            if ref() is not None:
                self.kept[phase].append(shape)
        self.refs = []

    def context(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda s: s.t)

    def remove(self):
        for h in self.handles:
            h.remove()


def batch_data(vocab, T, n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, T), generator=g)
    return [{"input_ids": ids[i], "labels": ids[i].clone()} for i in range(n)]


def run_case(plan_path, model_dir, checkpointing):
    torch.manual_seed(0)
    plan = load_plan(plan_path)
    T = 16
    data = batch_data(plan["model"]["vocabSize"], T, 6, 1)

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    applied = apply_plan(model, plan)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec = Recorder(model, plan)
    losses = []

    class RecordingTrainer(Trainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            with rec.context():
                out = super().compute_loss(model, inputs, *args, **kwargs)
            rec.count_kept()
            losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
            return out

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2, weight_decay=0.1,
            lr_scheduler_type="constant", warmup_steps=0, report_to=[], save_strategy="no", logging_strategy="no",
            use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=1, gradient_checkpointing=checkpointing,
        )
        trainer = RecordingTrainer(model=model, args=args, train_dataset=data)
        if not checkpointing:
            model.enable_input_require_grads()  # (gradient checkpointing turns it on by itself)
        trainer.train()

    bits = lambda x: x.detach().contiguous().view(-1).view(torch.int32) if x.dtype == torch.float32 else x.detach().view(-1)  # noqa: E731
    after = dict(model.named_parameters())
    frozen_changed = [n for n in applied.frozen if not torch.equal(bits(before[n]), bits(after[n]))]
    trainable_unchanged = [n for n in applied.trainable if torch.equal(bits(before[n]), bits(after[n]))]
    frozen_with_grad = [n for n in applied.frozen if after[n].grad is not None]
    result = {
        "freeze": plan["boundary"]["freeze"],
        "checkpointing": checkpointing,
        "trainableCount": len(applied.trainable),
        "frozenCount": len(applied.frozen),
        "optimizerParams": sum(len(g["params"]) for g in trainer.optimizer.param_groups),
        "frozenChanged": frozen_changed,
        "trainableUnchanged": trainable_unchanged,
        "frozenWithGrad": frozen_with_grad,
        "losses": losses,
        "saves": rec.saves,
        "kept": {k: len(v) for k, v in rec.kept.items()},
        "prefixKeptShapes": rec.kept["prefix"][:10],
        "prefixOutputsInAutograd": sorted(set(rec.prefix_outputs_in_autograd)),
    }
    rec.remove()

    # Control: the plan's requires_grad flags only, no hooks.
    control = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    params = dict(control.named_parameters())
    for n in applied.frozen:
        params[n].requires_grad_(False)
    control.train()
    if checkpointing:
        control.gradient_checkpointing_enable()
    else:
        control.enable_input_require_grads()
    crec = Recorder(control, plan)
    ids = torch.stack([d["input_ids"] for d in data[:2]])
    with crec.context():
        loss = control(input_ids=ids, labels=ids).loss
    crec.count_kept()
    loss.backward()
    result["control"] = {
        "saves": crec.saves,
        "kept": {k: len(v) for k, v in crec.kept.items()},
        "prefixKeptShapes": crec.kept["prefix"][:10],
        "prefixOutputsInAutograd": sorted(set(crec.prefix_outputs_in_autograd)),
    }
    return result


def refusal(plan_path, model_dir):
    """apply_plan on a model the plan was not made for: the PlanError's message."""
    from semfreeze_plan import PlanError

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    try:
        apply_plan(model, load_plan(plan_path))
    except PlanError as e:
        return {"refused": str(e)}
    return {"refused": None}


def main():
    cases = json.load(sys.stdin)
    print(json.dumps([refusal(c["plan"], c["model"]) if c.get("refusal") else run_case(c["plan"], c["model"], c.get("checkpointing", False)) for c in cases]))


if __name__ == "__main__":
    main()
