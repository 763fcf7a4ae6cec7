"""Apply a semfreeze freeze plan (`semfreeze plan --format json`, format semfreeze.plan/1) to a Hugging
Face causal LM, for training with Trainer, Accelerate, DeepSpeed or FSDP. Needs torch and transformers
only.

    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from semfreeze_plan import apply_plan, load_plan   # scripts/ on sys.path (or copy this file)

    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR)
    frozen = apply_plan(model, load_plan("plan.json"))   # before Trainer / accelerator.prepare / deepspeed
    trainer = Trainer(model=model, args=TrainingArguments(...), train_dataset=...)
    trainer.train()

What apply_plan does:

1. requires_grad is set to False on every parameter the plan freezes (the embeddings and blocks 0..K-1;
   a tied LM head is the embedding's own tensor) and to True on every parameter it trains, by exact
   name. A plan name the model lacks, or a model parameter the plan does not name, is an error: the plan
   was made for another model.
2. The frozen prefix runs under torch.no_grad: each module that runs before block K (blocks 0..K-1,
   the embeddings and the base model's other pre-block modules: dropout, rotary tables) gets a forward
   pre-hook that turns gradient recording off and a forward hook that turns it back (also when the
   module raises). Nothing inside the prefix is recorded for backward, so none of its activations is
   kept, even when something asks for gradients at the inputs (model.enable_input_require_grads(),
   which transformers calls for gradient checkpointing). A forward pre-hook on block K (on the final
   norm when K = N) detaches the hidden states it receives, so the backward stops there.

Trainer's optimizer takes only parameters with requires_grad, so frozen weights get no gradient and no
optimizer state, and are never changed (weight decay included). With DeepSpeed ZeRO or FSDP, call
apply_plan before the engine wraps the model; with FSDP set use_orig_params=True so that frozen and
trainable parameters may share a flattened group.

Gradient checkpointing: works with use_reentrant=False, transformers 5's default. Reentrant
checkpointing decides whether a block's output needs gradients from its inputs before any hook runs, so
above a frozen prefix it would return no gradients at all; block K's hook raises PlanError instead.

Run as a script to check a plan against a model directory:
    python scripts/semfreeze_plan.py PLAN.json MODEL_DIR
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import torch

PLAN_FORMAT = "semfreeze.plan/1"


class PlanError(ValueError):
    """The plan does not fit the model (or is not a semfreeze plan)."""


def load_plan(path: str) -> dict:
    """Read a plan file written by `semfreeze plan --format json`."""
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except json.JSONDecodeError as e:
        raise PlanError(f"{path}: not valid JSON ({e}); write the plan with --format json") from e
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise PlanError(f"{path}: not a semfreeze plan (expected \"format\": \"{PLAN_FORMAT}\")")
    return plan


@dataclass
class AppliedPlan:
    """What apply_plan did; remove() takes the hooks off (requires_grad stays as set)."""

    freeze: int | str
    trainable: list[str]
    frozen: list[str]
    hooks: list = field(default_factory=list)

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks.clear()


def apply_plan(model: torch.nn.Module, plan: dict) -> AppliedPlan:
    """Freeze `model` (a transformers *ForCausalLM) as `plan` says; see the module docstring."""
    if plan.get("format") != PLAN_FORMAT:
        raise PlanError(f"not a semfreeze plan (expected \"format\": \"{PLAN_FORMAT}\", got {plan.get('format')!r})")
    names = plan["names"]
    trainable = list(plan["parameters"]["trainable"])
    frozen = list(plan["parameters"]["frozen"])
    params = dict(model.named_parameters())
    where = f"{type(model).__name__} (plan for {plan['model']['architecture']} at {plan['model']['path']})"
    missing = [n for n in trainable + frozen if n not in params]
    if missing:
        raise PlanError(f"{where}: the model has no parameter {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unplanned = sorted(set(params) - set(trainable) - set(frozen))
    if unplanned:
        raise PlanError(f"{where}: the plan names no {unplanned[0]!r}" + (f" (and {len(unplanned) - 1} more)" if len(unplanned) > 1 else "") + "; it was made for another model")
    for n in frozen:
        params[n].requires_grad_(False)
    for n in trainable:
        params[n].requires_grad_(True)

    applied = AppliedPlan(freeze=plan["boundary"]["freeze"], trainable=trainable, frozen=frozen)
    K = plan["boundary"]["freeze"]
    if K == "none":
        return applied
    n_layer = plan["model"]["nLayer"]
    base = model.get_submodule(names["baseModel"])
    layer_names = [names["layerPattern"].replace("{i}", str(i)) for i in range(n_layer)]
    layers = [model.get_submodule(n) for n in layer_names]
    final_norm = model.get_submodule(names["finalNormModule"])

    # The prefix: blocks 0..K-1 and every other module of the base model that runs before the blocks
    # (embeddings, their dropout, rotary tables); not the final norm.
    prefix = [(n, m) for n, m in zip(layer_names[:K], layers[:K])]
    for child_name, child in base.named_children():
        if child is final_norm or any(child is l for l in layers) or any(any(c is l for l in layers) for c in child.children()):
            continue
        prefix.append((f"{names['baseModel']}.{child_name}", child))
    frozen_set = set(frozen)
    for mod_name, mod in prefix:
        for pn, _ in mod.named_parameters():
            if f"{mod_name}.{pn}" not in frozen_set:
                raise PlanError(f"{where}: {mod_name}.{pn} runs before block {K} but the plan trains it")

    def no_grad_pair(module: torch.nn.Module) -> None:
        modes: list[bool] = []

        def enter(mod, args):
            modes.append(torch.is_grad_enabled())
            torch.set_grad_enabled(False)

        def leave(mod, args, output):
            if modes:
                torch.set_grad_enabled(modes.pop())

        applied.hooks.append(module.register_forward_pre_hook(enter))
        applied.hooks.append(module.register_forward_hook(leave, always_call=True))

    for _, mod in prefix:
        no_grad_pair(mod)

    def cut(module, args, kwargs):
        # Reentrant checkpointing decides whether block K's output needs gradients from its inputs,
        # before this hook runs: with the input detached, blocks K.. would get none.
        fn = getattr(module, "_gradient_checkpointing_func", None)
        if module.training and getattr(module, "gradient_checkpointing", False) and getattr(fn, "keywords", {}).get("use_reentrant", False):
            raise PlanError("reentrant gradient checkpointing returns no gradients above a frozen prefix; use gradient_checkpointing_kwargs={'use_reentrant': False} (transformers' default)")
        # Block K receives its hidden states first (positionally) or as hidden_states=.
        if args and isinstance(args[0], torch.Tensor):
            return (args[0].detach(), *args[1:]), kwargs
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}
        return None

    boundary = layers[K] if K < n_layer else final_norm
    applied.hooks.append(boundary.register_forward_pre_hook(cut, with_kwargs=True))
    return applied


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/semfreeze_plan.py PLAN.json MODEL_DIR", file=sys.stderr)
        return 2
    from transformers import AutoModelForCausalLM

    plan = load_plan(argv[0])
    model = AutoModelForCausalLM.from_pretrained(argv[1])
    try:
        a = apply_plan(model, plan)
    except PlanError as e:
        print(f"semfreeze_plan: {e}", file=sys.stderr)
        return 1
    count = lambda ns: sum(dict(model.named_parameters())[n].numel() for n in ns)  # noqa: E731
    print(f"--freeze {a.freeze}: {len(a.trainable)} trainable tensors ({count(a.trainable):,} parameters), {len(a.frozen)} frozen ({count(a.frozen):,}); {len(a.hooks)} hooks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
