"""What one iteration of each loop executes: the thunks (fusions, library dots, copies, loops) of
every computation of a compiled CPU program's HLO text that a while loop runs, ours against
PureJaxRL's PPO. XLA's CPU runtime pays a cost per thunk on top of its work, so the counts
say where one run's time could go; they do not say where it goes (ours runs fewer thunks
per update than PureJaxRL and is still slower at one run: results/benchmarks/
peers_purejaxrl_cpu_analysis.md).

Text-only parsing (`body_counts`) does not import JAX; `programs` compiles both sides."""

from __future__ import annotations

import collections
import re

# Instructions that execute no thunk of their own.
FREE = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})
SUBKINDS = frozenset({"library"})  # counted again under their opcode (fusion)
_HEADER = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%[\w.\-]+ = .*? ([a-z\-]+)\(")
KINDS = ("fusion", "library", "copy", "sort", "while")
_BODY = re.compile(r"\bbody=%([\w.\-]+)")


def computations(text: str) -> dict[str, collections.Counter]:
    """{computation name: Counter of its instructions' opcodes} of an HLO module's text."""
    out: dict[str, collections.Counter] = {}
    name = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            name = header.group(1)
            out[name] = collections.Counter()
        elif line.startswith("}"):
            name = None
        elif name is not None:
            op = _INSTRUCTION.match(line)
            if op:
                out[name][op.group(1)] += 1
                if "kind=kCustom" in line:  # a library call (XNNPACK/YNNPACK dot) as a fusion
                    out[name]["library"] += 1
    return out


def body_counts(text: str) -> list[dict]:
    """One row per while-loop body of a compiled module (and the entry computation): its
    thunks (instructions other than FREE) and of those its fusions, library calls (the dots,
    which XLA's CPU backend emits as custom fusions), copies, sorts and loops, largest first."""
    comps = computations(text)
    entry = re.search(r"^ENTRY %([\w.\-]+)", text, re.M)
    names = set(_BODY.findall(text)) | ({entry.group(1)} if entry else set())
    rows = []
    for name in names & comps.keys():
        ops = comps[name]
        row = {
            "computation": name,
            "thunks": sum(n for op, n in ops.items() if op not in FREE | SUBKINDS),
        }
        row.update({op: ops[op] for op in KINDS})
        rows.append(row)
    return sorted(rows, key=lambda r: -r["thunks"])


def programs(purejaxrl_dir: str, runs: int, total_timesteps: int, num_logs: int) -> dict:
    """{"ours": HLO text of our PPO segment program, "purejaxrl": of PureJaxRL's whole
    program}, both compiled for `runs` runs of PPO CartPole at the default agent config."""
    import jax

    from research.bench.peer_workers import load_purejaxrl, purejaxrl_config, sharded_keys
    from research.bench.program import prepared, segment_args
    from research.runner import execute

    p = prepared(runs, total_timesteps, num_logs, None, ["agent=ppo", "env=cartpole"])
    args = segment_args(p)
    _, train = execute.lower(p.trainer, args, jax.default_backend())
    steps = p.trainer.steps_per_segment * p.trainer.num_logs
    peer = load_purejaxrl(purejaxrl_dir).make_train(purejaxrl_config(p, steps))
    keys, _ = sharded_keys(runs, list(p.devices))
    return {
        "ours": train.compile().as_text(),
        "purejaxrl": jax.jit(jax.vmap(peer)).lower(keys).compile().as_text(),
    }


def markdown(rows_by_side: dict[str, list[dict]]) -> str:
    """One table per side: loop bodies (and the entry), their thunks and kinds."""
    lines = []
    for side, rows in rows_by_side.items():
        lines += [f"**{side}**", "", f"| computation | thunks | {' | '.join(KINDS)} |"]
        lines.append("|---|---:|" + "---:|" * len(KINDS))
        for r in rows:
            kinds = " | ".join(str(r[k]) for k in KINDS)
            lines.append(f"| `{r['computation']}` | {r['thunks']} | {kinds} |")
        lines.append("")
    return "\n".join(lines)
