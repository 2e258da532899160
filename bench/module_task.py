"""An offline chat task with one unambiguous answer: given a standard-library function's
signature and docstring, name the module that defines it.

    python bench/module_task.py --out data/modules

writes ``train.jsonl`` (chat SFT data, ``data.format: chat``), ``heldout.jsonl`` and two
lm-eval tasks reading it: ``stdlib_modules`` asks each held-out question through
``/v1/chat/completions`` (lm-eval's ``local-chat-completions``) and scores exact match on
the module name; ``stdlib_modules_mc`` scores the likelihood of four candidate modules
(the answer and three others, seeded) through ``/v1/completions`` with ``echo`` and
``logprobs`` (``local-completions``).

Why it is fair: the functions are read from this machine's CPython sources (with ``ast``,
nothing is imported) and split by function, seeded: no held-out function, signature or
docstring is in the training file. The answers are module names the training file also
has (a closed set, as in any classification task), so what is measured is whether the
model learned to place unseen functions, not whether it memorized them. Modules with a
single public function are left out (their one item could not be both trained on and
held out), as are private and test modules.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import random
import sysconfig
from collections import defaultdict
from pathlib import Path

QUESTION = (
    "Which Python standard library module defines this function? Answer with the module's "
    "dotted name only.\n\n{code}"
)
SKIP = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "encodings",
    "pydoc_data",
    "turtledemo",
}


def functions(stdlib: Path) -> dict[str, list[str]]:
    """Module name -> public top-level functions as ``def name(args):`` + docstring."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if SKIP & set(rel.parts) or any(p.startswith("_") for p in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            first = doc.strip().split("\n\n")[0].strip()[:300].replace("\n", "\n    ")
            found[module].append(f'def {node.name}({ast.unparse(node.args)}):\n    """{first}"""')
    return {m: fs for m, fs in found.items() if len(fs) >= 2}


def held_out(module: str, code: str, fraction: float) -> bool:
    h = int(hashlib.sha256(f"{module}\0{code}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/modules")
    p.add_argument("--heldout-fraction", type=float, default=0.1)
    p.add_argument("--max-heldout", type=int, default=200, help="cap: CPU evaluation time")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = functions(Path(sysconfig.get_paths()["stdlib"]))
    train, test = [], []
    for module, codes in sorted(found.items()):
        for code in codes:
            item = {
                "messages": [
                    {"role": "user", "content": QUESTION.format(code=code)},
                    {"role": "assistant", "content": module},
                ]
            }
            (test if held_out(module, code, args.heldout_fraction) else train).append(item)
    test = test[:: max(1, len(test) // args.max_heldout)][: args.max_heldout]
    with open(out / "train.jsonl", "w") as f:
        f.writelines(json.dumps(i) + "\n" for i in train)
    modules = sorted(found)
    rng = random.Random(0)
    with open(out / "heldout.jsonl", "w") as f:
        for i in test:
            question, answer = (m["content"] for m in i["messages"])
            choices = [answer, *rng.sample([m for m in modules if m != answer], 3)]
            rng.shuffle(choices)
            item = {"question": question, "answer": answer, "choices": choices}
            f.write(json.dumps({**item, "label": choices.index(answer)}) + "\n")
    data = (out / "heldout.jsonl").absolute()
    (out / "modules.yaml").write_text(TASK.format(data=data))
    (out / "modules_mc.yaml").write_text(TASK_MC.format(data=data))
    print(
        f"{len(found)} modules: {len(train)} training conversations -> {out / 'train.jsonl'}, "
        f"{len(test)} held-out questions -> {out / 'heldout.jsonl'}, lm-eval tasks in {out}"
    )


# lm-eval task: the held-out questions as chat turns, generated greedily, exact match
TASK = """task: stdlib_modules
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "<|im_end|>"]
  max_gen_toks: 16
  do_sample: false
  temperature: 0.0
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "([A-Za-z_][A-Za-z0-9_.]*)"
        group_select: 0
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

# lm-eval task: the same questions as plain text, the answer picked by likelihood
TASK_MC = """task: stdlib_modules_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


if __name__ == "__main__":
    main()
