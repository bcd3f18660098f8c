"""LoRA SFT speed on SmolLM2-135M-Instruct on the CPU, and whether it learns a house format.

    .venv/bin/python -m benchmarks.train_speed [--steps 30] [--examples 100] [--threads 2]
    .venv/bin/python -m benchmarks.train_speed --format-check [--format-steps 30 60]

Speed: builds a dataset of ~``--examples`` domain-B chats through ``retrain.data.dataset`` and trains
through ``retrain.training.job.run_training`` (the real subprocess) with r=8, batch 4,
max_length 256. Prints seconds per step, steps/s, load and total seconds, and the adapter size.
Baseline, measured in the same run and process kind: one forward + backward pass of the *full*
model (no LoRA) on a batch of the same shape; the ratio says what a LoRA step costs relative to
it, which moves much less with machine load than the raw seconds.

Format check: domain B is IT support answered in the house format of the golden set
(``HelpDesk: <answer>``), domain A is chatterbot chit-chat in its own voice. A parent dataset
of domain-A chats feeds the replay buffer (20%); training runs ``--format-steps`` steps on ~60
domain-B examples; then greedy generation on the golden set ``helpdesk`` (held-out prompts,
excluded from training) counts how many domain-B answers take the format and how many domain-A
answers stay out of it, for the base model and for each adapter. Results go to the terminal and
to benchmarks/results/train_speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
HOUSE_PREFIX = "HelpDesk: "
CHAT_CATEGORIES = ("ai", "botprofile", "emotion", "food", "greetings", "humor", "movies")

# Domain B: IT-support requests about many devices and problems, answered in the house format.
# fmt: off
DEVICES = (
    "printer", "router", "laptop", "phone", "keyboard", "monitor", "headset", "webcam",
    "scanner", "projector", "tablet", "speaker", "docking station", "external drive",
    "smartwatch", "VPN client", "email app", "video call app",
)
PROBLEMS = {
    "won't turn on": (
        "Hold the power button of the {d} for ten seconds, then try another outlet.",
        "Charge the {d} for half an hour and check that the power cable is seated.",
        "Unplug the {d}, wait a minute, and start it again; if nothing lights up, book a repair.",
    ),
    "keeps disconnecting": (
        "Move the {d} closer to the access point and update its firmware.",
        "Forget the connection on the {d}, pair it again and turn off power saving.",
        "Replace the cable of the {d}; if it is wireless, change the channel on the router.",
    ),
    "is very slow": (
        "Close background apps, restart the {d} and install pending updates.",
        "Free some storage on the {d}; below ten percent free space everything slows down.",
        "Check the {d} for updates and run the built-in diagnostics overnight.",
    ),
    "shows an error code": (
        "Write down the code, restart the {d} and send us the code if it comes back.",
        "Look the code up in the {d} manual; most codes clear after a firmware update.",
        "Take a photo of the error on the {d} and attach it to a ticket.",
    ),
    "makes a strange noise": (
        "Switch the {d} off, check for loose parts and book a repair if the noise stays.",
        "A clicking {d} may be failing: back up your data today and open a ticket.",
        "Clean the vents of the {d}; dust makes fans loud.",
    ),
    "is not recognised": (
        "Try another cable and USB port, then reinstall the {d} driver.",
        "Remove the {d} in device settings and connect it again.",
        "Update the operating system; new {d} models need recent drivers.",
    ),
    "asks for a password I don't know": (
        "Use the self-service reset page; the {d} syncs the new password within minutes.",
        "Your {d} uses your company login; reset it in the account portal.",
        "Ask your team lead to confirm your access, then we can reset the {d} account.",
    ),
    "lost all my settings": (
        "Sign in again on the {d}; settings sync back from your profile.",
        "Restore the {d} from last night's backup in the self-service portal.",
        "Re-run the setup wizard of the {d}; your data is kept.",
    ),
}
OPENERS = (
    "My {d} {p}.", "Hi, my {d} {p}.", "Help! The {d} {p}.", "Our office {d} {p} since this morning.",
    "Since yesterday my {d} {p}. Any idea?", "Urgent: the {d} {p}.",
)
# fmt: on


def chat(prompt: str, answer: str, source: str, ref: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "source": source, "ref": ref}


def domain_b_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Return ``n`` varied IT-support chats answered in the house format."""
    rng = random.Random(seed)
    combos = list(itertools.product(DEVICES, PROBLEMS))
    rng.shuffle(combos)
    out = []
    for i, (device, problem) in enumerate(combos[:n]):
        prompt = rng.choice(OPENERS).format(d=device, p=problem)
        answer = HOUSE_PREFIX + rng.choice(PROBLEMS[problem]).format(d=device)
        out.append(chat(prompt[0].upper() + prompt[1:], answer, "feedback", f"b-{i}"))
    return out


def domain_a_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Return up to ``n`` chit-chat chats from chatterbot-corpus, answered in its own voice."""
    from monitor.corpora import chatterbot_conversations

    rows = [c for c in chatterbot_conversations(list(CHAT_CATEGORIES)) if c.answer]
    random.Random(seed).shuffle(rows)
    return [chat(c.prompt, c.answer or "", "judged", f"a-{i}") for i, c in enumerate(rows[:n])]


def base_model_dir() -> Path:
    from retrain.training.base_models import cache_dir, prepare_smollm2

    return prepare_smollm2(cache_dir() / "models" / "smollm2-135m-instruct")


def full_step_baseline(base: Path, dataset_path: Path, batch: int, threads: int) -> float:
    """Seconds for one forward+backward pass of the full model on a batch like the training's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    records = [json.loads(line) for line in (dataset_path / "train.jsonl").read_text().splitlines()]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records[:batch]]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
    timings = []
    for _ in range(4):
        started = time.perf_counter()
        loss = model(**encoded, labels=encoded["input_ids"]).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - started)
    return sorted(timings[1:])[1]  # median of three after a warm-up


def train(
    base: Path, dataset: Any, out: Path, steps: int, threads: int, lr: float
) -> dict[str, Any]:
    from retrain.training.job import TrainingSpec, run_training

    spec = TrainingSpec(
        base_model=base,
        dataset=dataset.path,
        output_root=out,
        rank=8,
        alpha=16,
        learning_rate=lr,
        max_steps=steps,
        batch_size=4,
        max_length=256,
        threads=threads,
        niceness=0,
        time_limit_s=1800,
    )

    def progress(p: Any) -> None:
        if p.phase == "training" and p.step and (p.step % 10 == 0 or p.step == p.max_steps):
            print(f"  step {p.step}/{p.max_steps} loss {p.loss:.3f}", flush=True)

    result = run_training(spec, on_progress=progress)
    size = sum(f.stat().st_size for f in result.adapter_path.iterdir())
    return {**result.metrics, "wall_seconds": result.wall_seconds, "adapter_bytes": size}


def generate(
    base: Path,
    adapter: Path | None,
    prompts: list[str],
    threads: int | None = None,
    max_new_tokens: int = 24,
) -> list[str]:
    """Greedy answers of the base model (or base + adapter) to single-turn prompts (``threads``:
    torch's thread count, its default when None)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads is not None:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    answers = []
    for prompt in prompts:
        batch = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        new = output[0, batch["input_ids"].shape[1] :]
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers


def format_scores(answers_b: list[str], answers_a: list[str]) -> dict[str, float]:
    return {
        "b_in_house_format": sum(a.startswith(HOUSE_PREFIX) for a in answers_b) / len(answers_b),
        "a_free_of_house_format": sum(not a.startswith(HOUSE_PREFIX) for a in answers_a)
        / len(answers_a),
    }


def run_speed(args: argparse.Namespace, base: Path, work: Path) -> dict[str, Any]:
    from retrain.data.dataset import build_dataset

    dataset = build_dataset(work / "datasets", domain_b_examples(args.examples, seed=1))
    kept = sum(dataset.manifest["counts"]["kept"].values())
    print(f"speed dataset {dataset.id}: {kept} of {args.examples} examples kept", flush=True)
    # The baseline is taken before and after training so that load drift on a shared machine
    # shows up as a gap between the two instead of silently skewing the ratio.
    load_before = os.getloadavg()[0]
    before = full_step_baseline(base, dataset.path, 4, args.threads)
    metrics = train(base, dataset, work / "adapters", args.steps, args.threads, args.lr)
    after = full_step_baseline(base, dataset.path, 4, args.threads)
    load_after = os.getloadavg()[0]
    baseline = (before + after) / 2
    ratio = metrics["seconds_per_step"] / baseline
    print(
        f"LoRA SFT: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s = "
        f"{metrics['seconds_per_step']:.2f} s/step ({metrics['steps_per_second']:.2f} steps/s); "
        f"load {metrics['load_seconds']:.1f} s, subprocess total {metrics['wall_seconds']:.1f} s; "
        f"adapter {metrics['adapter_bytes'] / 1e6:.2f} MB; loss {metrics['train_loss']:.3f}, "
        f"eval loss {metrics['eval_loss']:.3f}"
    )
    print(
        f"baseline full-model forward+backward {before:.2f} s/batch before, {after:.2f} after; "
        f"LoRA step / baseline = {ratio:.2f}; load average {load_before:.1f} -> {load_after:.1f}"
    )
    return {
        "dataset_examples": kept,
        "baseline_full_step_s": [before, after],
        "ratio": ratio,
        "load_average": [load_before, load_after],
        **metrics,
    }


def run_format(args: argparse.Namespace, base: Path, work: Path) -> dict[str, Any]:
    from retrain.data.dataset import DatasetSettings, build_dataset
    from retrain.gate.golden import golden_prompts, load_golden_set

    golden = load_golden_set("helpdesk")
    exclude = golden_prompts(golden)
    prompts_b = [e.messages[-1]["content"] for e in golden.examples if e.category == "tech_support"]
    prompts_a = [e.messages[-1]["content"] for e in golden.examples if e.category == "chitchat"]
    root = work / "format-datasets"
    parent = build_dataset(root, domain_a_examples(80, seed=2), golden_prompts=exclude)
    dataset = build_dataset(
        root,
        domain_b_examples(args.format_examples, seed=3),
        replay_from=[parent.id],
        golden_prompts=exclude,
        settings=DatasetSettings(replay_share=args.replay_share),
    )
    counts = dataset.manifest["counts"]
    print(
        f"format dataset {dataset.id}: train {counts['train']}, validation {counts['validation']},"
        f" replay share {dataset.manifest['replay']['share']}",
        flush=True,
    )
    report: dict[str, Any] = {"dataset": dataset.manifest["counts"], "runs": {}}
    before_b = generate(base, None, prompts_b, args.threads)
    before_a = generate(base, None, prompts_a, args.threads)
    report["runs"]["base"] = {**format_scores(before_b, before_a), "samples_b": before_b[:3]}
    print(f"base: {report['runs']['base']}", flush=True)
    for steps in args.format_steps:
        metrics = train(base, dataset, work / "format-adapters", steps, args.threads, args.lr)
        adapter = work / "format-adapters" / metrics["adapter_id"]
        after_b = generate(base, adapter, prompts_b, args.threads)
        after_a = generate(base, adapter, prompts_a, args.threads)
        scores = format_scores(after_b, after_a)
        report["runs"][f"{steps}_steps"] = {
            **scores,
            "train_seconds": metrics["train_seconds"],
            "train_loss": metrics["train_loss"],
            "eval_loss": metrics["eval_loss"],
            "samples_b": after_b[:3],
            "samples_a": after_a[:3],
        }
        print(f"{steps} steps: {report['runs'][f'{steps}_steps']}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--examples", type=int, default=110)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--format-check", action="store_true")
    parser.add_argument("--format-only", action="store_true", help="skip the speed run")
    parser.add_argument("--format-examples", type=int, default=66)
    parser.add_argument("--format-steps", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--replay-share", type=float, default=0.2)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    base = base_model_dir()
    results: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        work = Path(tmp)
        if not args.format_only:
            results["speed"] = run_speed(args, base, work)
        if args.format_check or args.format_only:
            results["format"] = run_format(args, base, work)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = f"train_speed-{dt.date.today().isoformat()}-t{args.threads}"
    if args.format_check or args.format_only:
        name += f"-replay{args.replay_share:g}-lr{args.lr:g}"
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
