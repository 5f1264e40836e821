"""One place per default: every value configs/config.yaml sets is the parser's own default
(or a required value with none), so the two cannot drift apart. The agents' YAMLs have their
own drift test (tests/test_agent_registry.py)."""

import copy

import pytest

from research.config import ConfigError, parse_experiment
from tests.conftest import compose_raw


def _leaves(tree, prefix=()):
    """Key paths of the mapping's leaves (a mapping's leaf: any non-mapping value)."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def test_every_default_in_config_yaml_is_the_parsers_own():
    raw = compose_raw()
    base = parse_experiment(raw)
    checked = []
    for path in _leaves(raw):
        if path[0] in ("agent", "env", "experiment_name"):  # agent/env YAMLs, interpolated name
            continue
        without = copy.deepcopy(raw)
        parent = without
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        try:
            parsed = parse_experiment(without)
        except ConfigError as error:  # a required value: no default to drift from
            assert "missing" in str(error) or "got None" in str(error), (path, error)
            continue
        assert parsed == base, f"{'.'.join(path)}: config.yaml's value is not the default"
        checked.append(".".join(path))
    assert {"progress", "plot", "checkpoint_states", "search.kind", "train.num_logs"} <= set(
        checked
    ), checked


@pytest.mark.parametrize("path", ["checkpoint_states", "search.num_samples"])
def test_the_check_can_fail(path):
    """A changed default in config.yaml is caught (the test above would flag it)."""
    raw = compose_raw()
    changed = copy.deepcopy(raw)
    parent = changed
    keys = path.split(".")
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = parent[keys[-1]] + 1
    assert parse_experiment(changed) != parse_experiment(raw)
