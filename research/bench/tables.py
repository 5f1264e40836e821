"""The benchmark tables: every row of a benchmark in <out>/<name>.csv, the same as markdown
(<name>.md, with rows measured under load marked) and a scaling plot (<name>.png). Written
after every configuration, atomically, so an interrupted benchmark still leaves a consistent
table; --append merges into an earlier table so that settings measured on different days sit
side by side."""

from __future__ import annotations

import math
from pathlib import Path

from research.bench.load import BUSY_CORES, is_busy
from research.bench.program import AGENTS

COLUMNS = [
    "agent",
    "env",
    "setting",
    "device",
    "platform",
    "num_devices",
    "runs",
    "env_steps_per_run",
    "num_updates",
    "num_logs",
    "chunk_size",
    "num_chunks",
    "env_steps_per_s",
    "env_steps_per_s_per_run",
    "compile_s",
    "run_s",
    "wall_s",
    "cpu_s",
    "other_load",
    "program_mib",
    "peak_rss_mib",
    "device_peak_mib",
    "state_kib_per_run",
    "buffer_mib_per_run",
    "final_return",
    "status",
    "env_id",
    "overrides",
    "agent_settings",
    "xla_flags",
    "cpus",
    "jax",
    "git_commit",
    "timestamp",
    "command",
]

TEXT_COLUMNS = {
    "agent",
    "env",
    "setting",
    "device",
    "platform",
    "status",
    "env_id",
    "overrides",
    "agent_settings",
    "xla_flags",
    "cpus",
    "jax",
    "git_commit",
    "timestamp",
    "command",
}
# Rows of tables written before --agent existed: PPOConfig defaults on CartPole-v1.
LEGACY = {
    "agent": "ppo",
    "env": "cartpole",
    "env_id": "CartPole-v1",
    "overrides": "agent=ppo env=cartpole",
}


def fmt(value, digits: int) -> str:
    """A table cell: '-' for a missing or non-finite value, thousands separators otherwise."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


INTRO = (
    "One batched program per row (`research.runner.run_batch`), built from the project's "
    "Hydra config (`research.pipelines.train.prepare`, the agent's overrides below), each "
    "row in a fresh process.  "
)


def chunks(num) -> str:
    """'<chunks> x <runs per chunk>' of a row (num: column -> value or None), '-' if unknown."""
    if num("num_chunks") is None or num("chunk_size") is None:
        return "-"
    return f"{int(num('num_chunks'))} x {int(num('chunk_size'))}"


def markdown(frame, device: str, intro: str = INTRO, extra=None) -> str:
    """The whole table, then `extra(frame)`'s lines (if given), the fastest setting for each
    agent and R, the agents' settings and the XLA settings."""
    lines = [*header_lines(frame, device, intro), *busy_lines(frame), *row_lines(frame)]
    if extra is not None:
        lines += extra(frame)
    lines += fastest_lines(frame) + agent_lines(frame) + setting_lines(frame)
    return "\n".join(lines) + "\n"


def header_lines(frame, device: str, intro: str) -> list[str]:
    """Title, device and what each column means: a table read months later explains itself."""
    agents = list(dict.fromkeys(frame["agent"]))
    envs = list(dict.fromkeys(frame["env_id"]))
    what = ", ".join(agents) + " on " + ", ".join(envs)
    return [
        f"# {what}: throughput of R parallel runs",
        "",
        f"Device: **{device}**.  ",
        intro,
        "chunks = chunks x runs per chunk, run one after the other. "
        "env-steps/s = R x env steps per run / run time (compile excluded). "
        "program = XLA's memory estimate per device (arguments + outputs + temporaries, "
        "donated buffers once); "
        "RSS = the process's peak resident memory (compile included); "
        "state/run = one run's agent state (parameters, optimiser state, replay buffer), "
        "buffer/run = its replay buffer alone. "
        "other load = cores that other processes kept busy meanwhile (they skew the row).",
        "",
    ]


def busy_lines(frame) -> list[str]:
    """A warning naming the rows measured under load, if any: their numbers are bounds."""
    busy = [r for r in frame.to_dict("records") if is_busy(r.get("other_load"))]
    if not busy:
        return []
    return [
        f"**Measured under load:** {len(busy)} of {len(frame)} rows (marked *busy*: other "
        f"processes kept more than {BUSY_CORES} cores busy meanwhile, so their speed is a "
        "lower bound and their compile time an upper bound): "
        + ", ".join(f"{r['agent']} R={int(r['runs'])} ({r['other_load']:.2f} cores)" for r in busy)
        + ".",
        "",
    ]


def row_lines(frame) -> list[str]:
    """The table itself, one line per row."""
    lines = [
        "| agent | env | setting | R | devices | chunks | steps/run | env-steps/s | per run "
        "| compile s "
        "| run s | program MiB | peak RSS MiB | state KiB/run | buffer MiB/run | final return "
        "| other load | status |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in frame.to_dict("records"):
        num = lambda k, row=row: None if row.get(k) is None or row[k] != row[k] else row[k]
        load = fmt(num("other_load"), 2) + (" *busy*" if is_busy(num("other_load")) else "")
        lines.append(
            f"| {row['agent']} | {row['env']} | {row['setting']} | {int(row['runs'])} "
            f"| {fmt(num('num_devices'), 0)} | {chunks(num)} "
            f"| {fmt(num('env_steps_per_run'), 0)} | {fmt(num('env_steps_per_s'), 0)} "
            f"| {fmt(num('env_steps_per_s_per_run'), 0)} | {fmt(num('compile_s'), 1)} "
            f"| {fmt(num('run_s'), 1)} | {fmt(num('program_mib'), 1)} "
            f"| {fmt(num('peak_rss_mib'), 0)} | {fmt(num('state_kib_per_run'), 1)} "
            f"| {fmt(num('buffer_mib_per_run'), 2)} | {fmt(num('final_return'), 1)} "
            f"| {load} | {row['status']} |"
        )
    return lines


def fastest_lines(frame) -> list[str]:
    """The fastest setting per agent and R against the default, where some agent was measured
    at more than one setting (the question a settings sweep asks)."""
    ok = frame[frame["status"] == "ok"]
    if not len(ok) or ok.groupby(["agent", "env"])["setting"].nunique().max() <= 1:
        return []
    lines = [
        "",
        "## Fastest setting per agent and R",
        "",
        "| agent | env | R | fastest setting | env-steps/s | vs default | other load |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for (agent, env, runs), group in ok.groupby(["agent", "env", "runs"], sort=False):
        best = group.loc[group["env_steps_per_s"].idxmax()]
        base = group[group["setting"] == "default"]["env_steps_per_s"]
        ratio = f"{best['env_steps_per_s'] / base.iloc[0]:.2f}x" if len(base) else "-"
        load = best.get("other_load")
        mark = " *busy*" if is_busy(load) else ""
        lines.append(
            f"| {agent} | {env} | {runs} | {best['setting']} "
            f"| {best['env_steps_per_s']:,.0f} | {ratio} | {fmt(load, 2)}{mark} |"
        )
    return lines


def agent_lines(frame) -> list[str]:
    """Each agent's full settings, so that a row can be reproduced."""
    lines = ["", "## Agents", ""]
    for row in frame.drop_duplicates(["agent", "env", "overrides"]).to_dict("records"):
        settings = row["agent_settings"] or (
            "PPOConfig defaults: num_envs=4, num_steps=128, "
            "num_epochs=4, num_minibatches=4, "
            "hidden_sizes=(64, 64), activation=tanh"
        )
        lines.append(f"- **{row['agent']}** on {row['env_id']} (`{row['overrides']}`): {settings}")
    return lines


def setting_lines(frame) -> list[str]:
    """Each setting's XLA flags, CPUs, versions and commit, then the commands that ran."""
    lines = ["", "## Settings", ""]
    for row in frame.drop_duplicates("setting").to_dict("records"):
        lines.append(
            f"- **{row['setting']}**: XLA_FLAGS=`{row['xla_flags'] or ''}`, "
            f"cpus `{row['cpus'] or 'all'}`, jax {row['jax']}, commit "
            f"{row['git_commit']}, {row['timestamp']}"
        )
    commands = list(dict.fromkeys(frame["command"]))
    return lines + ["", "## Commands", "", *[f"- `{c}`" for c in commands]]


KEY = ["agent", "env", "setting", "runs"]  # --append replaces the earlier rows of a key


def write_tables(
    rows: list[dict],
    out: Path,
    name: str,
    append: bool,
    device: str,
    order=AGENTS,
    intro: str = INTRO,
    extra=None,
) -> Path:
    """<out>/<name>.csv and .md (atomically), merged with the existing table if `append`.
    Rows are sorted by agent (in the order of `order`), env, R and setting; `intro` and
    `extra` go to `markdown`."""
    import pandas as pd

    from research.results import write_csv, write_text

    csv = out / f"{name}.csv"
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if append and csv.exists():
        frame = merged(pd.read_csv(csv, dtype={c: str for c in TEXT_COLUMNS}), frame)
    frame = sorted_rows(frame, order)
    write_csv(csv, frame)
    write_text(out / f"{name}.md", markdown(frame, device, intro, extra))
    plot_scaling_of(frame, out / f"{name}.png", device)
    return csv


def merged(old, frame):
    """The earlier table's rows whose key `frame` does not measure again, then `frame`'s."""
    import pandas as pd

    old = old.reindex(columns=COLUMNS)
    for column, value in LEGACY.items():  # tables from before --agent: PPO on CartPole
        old[column] = old[column].fillna(value)
    key = set(zip(*(frame[k] for k in KEY)))
    old = old[[k not in key for k in zip(*(old[k] for k in KEY))]]
    parts = [part.dropna(axis=1, how="all") for part in (old, frame)]  # no all-NA dtypes
    return pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)


def sorted_rows(frame, order):
    """Text columns as strings ('' for missing), rows sorted by agent (in the order of
    `order`), env, R and setting: a stable order, so re-runs diff cleanly."""
    text = [c for c in COLUMNS if c in TEXT_COLUMNS]
    frame[text] = frame[text].astype(object).where(frame[text].notna(), "").astype(str)
    rank = {a: i for i, a in enumerate(order)}
    frame = frame.sort_values(
        ["agent", "env", "runs", "setting"],
        kind="stable",
        key=lambda c: c.map(rank) if c.name == "agent" else c,
    )
    return frame.reset_index(drop=True)


def plot_scaling_of(frame, path: Path, device: str) -> None:
    """<name>.png: env-steps/s and peak memory against R, a line per agent and setting (rows
    that finished; only where some agent was measured at two or more R)."""
    import pandas as pd

    from research.analysis.curves import plot_scaling

    ok = frame[frame["status"] == "ok"].copy()
    ok["label"] = ok["agent"] + " (" + ok["env"] + ", " + ok["setting"] + ")"
    for column in ("env_steps_per_s", "peak_rss_mib", "device_peak_mib", "runs"):
        ok[column] = pd.to_numeric(ok[column], errors="coerce")
    if len(ok) and ok.groupby("label")["runs"].nunique().max() >= 2:
        plot_scaling(ok, path, f"throughput and memory against parallel runs: {device}")
