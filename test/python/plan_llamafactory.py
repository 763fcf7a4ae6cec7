"""scripts/check_llamafactory_yaml.py's check on several cases in one process (test/plan-export.test.ts
runs this). Prints, as its last line, a JSON array with the check's result per case, or {"refused":
message} where LLaMA-Factory's logic raises.

    echo '[{"plan": "PLAN.json", "yaml": "PLAN.yaml", "model": "MODEL_DIR"}, ...]' | python test/python/plan_llamafactory.py
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from check_llamafactory_yaml import check  # noqa: E402


def run_case(c):
    try:
        return check(c["plan"], c["yaml"], c["model"])
    except (ValueError, AssertionError) as e:
        return {"refused": str(e)}


if __name__ == "__main__":
    print(json.dumps([run_case(c) for c in json.load(sys.stdin)]))
