"""Check that a LLaMA-Factory YAML fragment from `semfreeze plan --format llamafactory` trains exactly the
parameters of the semfreeze plan (`semfreeze plan --format json`) on a Hugging Face model.

    python scripts/check_llamafactory_yaml.py --plan PLAN.json --yaml PLAN.yaml --model MODEL_DIR [--json]

LLaMA-Factory itself is not installed here (it is not on the package mirror). This script is a
re-implementation of its parser and freeze-tuning logic, copied as closely as possible from the
LLaMA-Factory source (the hiyouga/LLaMA-Factory repository) at commit ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30:

- src/llamafactory/hparams/parser.py, read_args/_parse_args: the YAML is loaded with OmegaConf (used here
  when importable, else PyYAML) and parsed with transformers' HfArgumentParser.parse_dict, which refuses
  unknown keys;
- src/llamafactory/hparams/finetuning_args.py: FreezeArguments (freeze_trainable_layers,
  freeze_trainable_modules, freeze_extra_modules), finetuning_type and use_llama_pro, with
  FinetuningArguments.__post_init__'s split_arg (comma lists) and its finetuning_type check;
- src/llamafactory/model/adapter.py, _setup_freeze_tuning and _setup_full_tuning: which parameters keep
  requires_grad. The multimodal parts (COMPOSITE_MODELS, get_forbidden_modules) are left out: they
  apply only to vision-language model types, none of which semfreeze supports.

The functions marked "From src/llamafactory/..." below are copied from LLaMA-Factory (Copyright 2025 the
LlamaFactory team, Apache License 2.0), trimmed to what freeze selection reads.

The model is built from its config.json on the meta device (no weights are read), so the parameter
names are exactly those of AutoModelForCausalLM's named_parameters().

A fragment may declare parameters it cannot express and leaves frozen, in a comment line
`# semfreeze-frozen-here: NAME,...` (the Llama family's final norm: see src/analysis/plan.ts). The check
passes when LLaMA-Factory's selection equals the plan's trainable parameters less exactly those.
Exit status 0 when it passes, 1 when it does not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Literal

LLAMAFACTORY_COMMIT = "ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30"


# --- From src/llamafactory/hparams/finetuning_args.py (the fields the fragment may set) ---------------
@dataclass
class FreezeArguments:
    freeze_trainable_layers: int = field(default=2)
    freeze_trainable_modules: str = field(default="all")
    freeze_extra_modules: str | None = field(default=None)


@dataclass
class FinetuningArguments(FreezeArguments):
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = field(default="lora")
    use_llama_pro: bool = field(default=False)

    def __post_init__(self):
        def split_arg(arg):
            if isinstance(arg, str):
                return [item.strip() for item in arg.split(",")]
            return arg

        self.freeze_trainable_modules = split_arg(self.freeze_trainable_modules)
        self.freeze_extra_modules = split_arg(self.freeze_extra_modules)
        assert self.finetuning_type in ["lora", "oft", "freeze", "full"], "Invalid fine-tuning method."
        if self.use_llama_pro and self.finetuning_type == "full":
            raise ValueError("`use_llama_pro` is only valid for Freeze or LoRA training.")


# --- From src/llamafactory/model/adapter.py ------------------------------------------------------------
def setup_freeze_tuning(model, finetuning_args: FinetuningArguments) -> set[str]:
    """_setup_freeze_tuning: the names left with requires_grad (is_trainable=True, no composite model)."""
    if hasattr(model.config, "text_config"):  # composite models
        config = getattr(model.config, "text_config")
    else:
        config = model.config

    num_layers = (
        getattr(config, "num_hidden_layers", None)
        or getattr(config, "num_layers", None)
        or getattr(config, "n_layer", None)
    )
    if not num_layers:
        raise ValueError("Current model does not support freeze tuning.")

    if finetuning_args.use_llama_pro:
        if num_layers % finetuning_args.freeze_trainable_layers != 0:
            raise ValueError(
                f"`num_layers` {num_layers} should be "
                f"divisible by `num_layer_trainable` {finetuning_args.freeze_trainable_layers}."
            )

        stride = num_layers // finetuning_args.freeze_trainable_layers
        trainable_layer_ids = range(stride - 1, num_layers + stride - 1, stride)
    elif finetuning_args.freeze_trainable_layers > 0:  # fine-tuning the last n layers if num_layer_trainable > 0
        trainable_layer_ids = range(max(0, num_layers - finetuning_args.freeze_trainable_layers), num_layers)
    else:  # fine-tuning the first n layers if num_layer_trainable < 0
        trainable_layer_ids = range(min(-finetuning_args.freeze_trainable_layers, num_layers))

    hidden_modules = set()
    non_hidden_modules = set()
    for name, _ in model.named_parameters():
        if ".0." in name:
            hidden_modules.add(name.split(".0.")[-1].split(".")[0])
        elif ".1." in name:  # MoD starts from layer 1
            hidden_modules.add(name.split(".1.")[-1].split(".")[0])

        if re.search(r"\.\d+\.", name) is None:
            non_hidden_modules.add(name.split(".")[-2])  # remove weight/bias

    trainable_layers = []
    for module_name in finetuning_args.freeze_trainable_modules:
        if module_name != "all" and module_name not in hidden_modules:
            raise ValueError(
                "Module {} is not found, please choose from {}".format(module_name, ", ".join(hidden_modules))
            )

        for idx in trainable_layer_ids:
            trainable_layers.append(".{:d}.{}".format(idx, module_name if module_name != "all" else ""))

    if finetuning_args.freeze_extra_modules:
        for module_name in finetuning_args.freeze_extra_modules:
            if module_name not in non_hidden_modules:
                raise ValueError(
                    "Module {} is not found, please choose from {}".format(module_name, ", ".join(non_hidden_modules))
                )

            trainable_layers.append(module_name)

    # (COMPOSITE_MODELS projector keys and get_forbidden_modules: vision-language models only; omitted.)
    forbidden_modules: set[str] = set()
    trainable = set()
    for name, _param in model.named_parameters():
        if any(trainable_layer in name for trainable_layer in trainable_layers) and not any(
            forbidden_module in name for forbidden_module in forbidden_modules
        ):
            trainable.add(name)
    return trainable


def setup_full_tuning(model) -> set[str]:
    """_setup_full_tuning: everything outside the (multimodal-only) forbidden modules trains."""
    return {name for name, _ in model.named_parameters()}


# --- The check -------------------------------------------------------------------------------------------
def load_yaml(path: str) -> tuple[dict, str]:
    try:
        from omegaconf import OmegaConf  # what LLaMA-Factory's read_args uses

        return OmegaConf.to_container(OmegaConf.load(path)), "OmegaConf"
    except ImportError:
        import yaml

        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f), "PyYAML (OmegaConf is not installed)"


def declared_frozen_here(path: str) -> list[str]:
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"#\s*semfreeze-frozen-here:\s*(.*)$", line.strip())
            if m:
                out += [x.strip() for x in m.group(1).split(",") if x.strip()]
    return out


def meta_model(model_dir: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def check(plan_path: str, yaml_path: str, model_dir: str) -> dict:
    from transformers import HfArgumentParser

    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    if plan.get("format") != "semfreeze.plan/1":
        raise SystemExit(f"check_llamafactory_yaml: {plan_path}: not a semfreeze plan (write it with --format json)")
    args, loader = load_yaml(yaml_path)
    if not isinstance(args, dict):
        raise SystemExit(f"check_llamafactory_yaml: {yaml_path}: expected a YAML mapping")
    (finetuning_args,) = HfArgumentParser(FinetuningArguments).parse_dict(args, allow_extra_keys=False)
    model = meta_model(model_dir)
    if finetuning_args.finetuning_type == "freeze":
        selected = setup_freeze_tuning(model, finetuning_args)
    elif finetuning_args.finetuning_type == "full":
        selected = setup_full_tuning(model)
    else:
        raise SystemExit(f"check_llamafactory_yaml: {yaml_path}: finetuning_type {finetuning_args.finetuning_type} is not a freeze plan")
    planned = set(plan["parameters"]["trainable"])
    declared = declared_frozen_here(yaml_path)
    expected = planned - set(declared)
    only_yaml = sorted(selected - planned)
    only_plan = sorted(planned - selected)
    ok = selected == expected and set(declared) <= planned
    return {
        "ok": ok,
        "llamafactoryCommit": LLAMAFACTORY_COMMIT,
        "loader": loader,
        "model": model_dir,
        "modelClass": type(model).__name__,
        "freeze": plan["boundary"]["freeze"],
        "args": {k: args[k] for k in args},
        "selected": len(selected),
        "planned": len(planned),
        "declaredFrozenHere": declared,
        "onlyInYaml": only_yaml,
        "onlyInPlan": only_plan,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", required=True)
    p.add_argument("--yaml", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        r = check(a.plan, a.yaml, a.model)
    except (ValueError, AssertionError) as e:  # LLaMA-Factory's own refusals (unknown key, module not found)
        print(f"check_llamafactory_yaml: LLaMA-Factory's logic refuses {a.yaml}: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{a.yaml} on {a.model} ({r['modelClass']}, --freeze {r['freeze']}; parsed with {r['loader']}, logic of LLaMA-Factory {LLAMAFACTORY_COMMIT[:12]}):")
        print(f"  LLaMA-Factory trains {r['selected']} tensors; the plan trains {r['planned']}")
        if r["declaredFrozenHere"]:
            print(f"  declared frozen by the fragment (not expressible): {', '.join(r['declaredFrozenHere'])}")
        print(f"  trained only by LLaMA-Factory: {', '.join(r['onlyInYaml']) or 'none'}")
        print(f"  trained only by the plan: {', '.join(r['onlyInPlan']) or 'none'}")
        print("  OK: the fragment means the plan" + (" (less the declared tensors)" if r["declaredFrozenHere"] else "") if r["ok"] else "  MISMATCH")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
