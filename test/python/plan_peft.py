"""PEFT with a semfreeze plan's LoRA config (`semfreeze plan --format peft`); test/plan-export.test.ts runs
this. Prints, as its last line, a JSON array with one object per case: where get_peft_model put LoRA
adapters and what trains.

    echo '[{"config": "PEFT.json", "model": "MODEL_DIR"}, ...]' | python test/python/plan_peft.py
"""

import json
import re
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

torch.manual_seed(0)
torch.set_num_threads(1)


def run_case(cfg_path, model_dir):
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    config = LoraConfig(**cfg)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    peft_model = get_peft_model(model, config)
    adapted = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and len(module.lora_A) > 0:
            m = re.search(r"\.(?:h|layers)\.(\d+)\.(.+)$", name)
            adapted.setdefault(int(m.group(1)), []).append(m.group(2))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    with_grad = [n for n, p in peft_model.named_parameters() if p.grad is not None]
    return {
        "adaptedLayers": sorted(adapted),
        "adaptedModules": {str(k): sorted(v) for k, v in sorted(adapted.items())},
        "trainableNonLora": [n for n in trainable if "lora_" not in n],
        "trainableLora": len([n for n in trainable if "lora_" in n]),
        "withGradNonLora": [n for n in with_grad if "lora_" not in n],
        "loss": float(loss.detach()),
    }


def main():
    print(json.dumps([run_case(c["config"], c["model"]) for c in json.load(sys.stdin)]))


if __name__ == "__main__":
    main()
