"""PureJaxRL as a benchmark peer (research.bench.peer_workers): a missing or wrong
--purejaxrl-dir is one clear error before anything runs, and a checkout is imported with
only its unused brax / navix imports stubbed and gymnax 1.0's six-value step adapted to the
five values it unpacks. On a tiny fake checkout; the real one is measured by
scripts/benchmark_peers.py --compare purejaxrl."""

import sys

import pytest

from research.bench import peer_workers, peers
from research.errors import InputError

# A stand-in for purejaxrl/wrappers.py and ppo.py: the same imports, one env step.
WRAPPERS = """
import jax
from brax import envs
from brax.envs.wrappers.training import EpisodeWrapper, AutoResetWrapper
import navix as nx
MARK = "wrappers"
"""
PPO = """
import jax
import gymnax
from wrappers import MARK

def make_train(config):
    env, env_params = gymnax.make(config["ENV_NAME"])

    def train(rng):
        reset_key, step_key = jax.random.split(rng)
        obs, state = env.reset(reset_key, env_params)
        return env.step(step_key, state, 0, env_params)

    return train
"""


def checkout(tmp_path):
    (tmp_path / "purejaxrl").mkdir()
    (tmp_path / "purejaxrl" / "wrappers.py").write_text(WRAPPERS)
    (tmp_path / "purejaxrl" / "ppo.py").write_text(PPO)
    return tmp_path


def test_a_checkout_imports_with_stubs_and_a_five_value_step(tmp_path):
    import jax

    before = {n: sys.modules.get(n) for n in (*peer_workers.STUBBED, "wrappers")}
    module = peer_workers.load_purejaxrl(checkout(tmp_path))
    assert module.MARK == "wrappers"
    assert {n: sys.modules.get(n) for n in before} == before  # stubs gone after the import
    out = module.make_train({"ENV_NAME": "CartPole-v1"})(jax.random.key(0))
    assert len(out) == 5  # obs, state, reward, done, info
    info = out[4]
    assert bool(out[3]) == bool(info["terminated"] | info["truncated"])
    with pytest.raises(RuntimeError, match="stubbed"):
        peer_workers._Unused()  # what a stubbed brax / navix name is, should it be used


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--compare", "purejaxrl"], "--compare purejaxrl needs --purejaxrl-dir"),
        (["--compare", "purejaxrl", "--purejaxrl-dir", "{tmp}"], "not a PureJaxRL checkout"),
    ],
)
def test_a_missing_or_wrong_checkout_is_one_error(tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "out")]
    with pytest.raises(InputError, match=message):
        peers.run(peers.parser().parse_args(argv), argv)
    assert not (tmp_path / "out").exists()


def test_the_peer_runs_the_checkout_given(tmp_path):
    args = peers.parser().parse_args(
        ["--compare", "purejaxrl", "--purejaxrl-dir", str(checkout(tmp_path))]
    )
    peers.check_purejaxrl_dir(args)
    (ours, _, _), (peer, _, payload) = peers.jobs(args, "purejaxrl", 4)
    assert (ours, peer) == ("ppo", "purejaxrl_ppo")
    assert payload[-2:] == ["--purejaxrl-dir", str(tmp_path.resolve())]
