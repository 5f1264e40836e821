"""The driving env (research/envs/driving.py): the bicycle step, IDM and the leader search at
hand-computed values, collisions and near misses on hand-made scenes, rewards, pedestrians,
reset determinism, a batch of different road layouts in one jit, config errors, every agent
on it, and PPO learning to drive on the highway with at most 1.2% of episodes crashing (slow)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.envs import Env, driving, stack_params
from research.envs.registry import ObservedMetric
from research.runner import make_evaluate
from tests.conftest import train
from tests.test_domain_envs import TINY

DRIVING, CONTINUOUS = "Driving-v0", "DrivingContinuous-v0"
P = driving.DrivingParams()
V, PED = driving.MAX_VEHICLES, driving.MAX_PEDESTRIANS
# compiled once for every test here: eager steps dispatch hundreds of small ops
STEP = jax.jit(driving.Driving().step_env)
OBSERVE = jax.jit(driving.observe)
BICYCLE, IDM, LEADERS = map(jax.jit, (driving.bicycle_step, driving.idm_accel, driving.leaders))
METRICS = jax.jit(
    lambda obs, valid: {k: m.fn(obs, valid, P) for k, m in driving.EPISODE_METRICS.items()}
)
# what the env reads off an observation, in one program
EVENTS = jax.jit(
    lambda obs, params: {
        "collided": driving.collided(obs, params),
        "near_miss": driving.near_miss(obs, params),
        "pedestrian_clearance": driving.observed_pedestrian_clearance(obs, params),
        "clearance": driving.clearance(obs, params),
        "observed_gap": driving.observed_gap(obs[7:21]),
    }
)


def observe(state, params=P):
    """The observation of a state as numpy, with EVENTS of it ({name: python scalar})."""
    obs = OBSERVE(state, params)
    return np.asarray(obs), {k: v.item() if v.ndim == 0 else np.asarray(v)
                             for k, v in EVENTS(obs, params).items()}  # fmt: skip


def batch_reset(env_id):
    """reset(keys [B], params [B]) of env_id, jitted and vmapped: the one program of the
    batch tests (Driving-v0's and DrivingContinuous-v0's lower to the same executable)."""
    return jax.jit(jax.vmap(Env(env_id).reset))


RESET = batch_reset(DRIVING)


def scene(ego=(100.0, 6.0, 0.0, 20.0), cars=(), peds=(), params=P, **fields):
    """A state with the ego at (x, y, heading, speed), cars (x, lane, speed) and pedestrians
    (x, y, vy); every other slot empty, targets at the ego's lane and speed."""
    car = np.zeros((V, 3), np.float32)
    car[: len(cars)] = np.reshape(cars, (-1, 3))
    ped = np.zeros((PED, 3), np.float32)
    ped[: len(peds)] = np.reshape(peds, (-1, 3))
    # numpy leaves: building a scene compiles nothing (driving.ego_lane, in numpy)
    lane = np.clip(np.floor(ego[1] / params.lane_width), 0, params.num_lanes - 1)
    state = driving.DrivingState(
        time=np.int32(0),
        ego=np.asarray(ego, np.float32),
        target_lane=np.int32(lane),
        target_speed=np.float32(ego[3]),
        odometer=np.float32(0.0),
        car_x=car[:, 0],
        car_lane=car[:, 1].astype(np.int32),
        car_speed=car[:, 2],
        car_desired=car[:, 2].copy(),
        car_active=np.arange(V) < len(cars),
        ped_x=ped[:, 0],
        ped_y=ped[:, 1],
        ped_vy=ped[:, 2],
        ped_active=np.arange(PED) < len(peds),
    )
    return state.replace(**fields)


# ------------------------------------------------------------------------------ dynamics


def test_bicycle_step_at_known_states():
    """Straight: x += v dt, v += a dt. Steering with tan(steer) = 2 tan(pi / 6) gives a slip
    angle of pi / 6: x += v cos(pi / 6) dt, y += v / 2 dt, heading += v sin(pi / 6) / 1.25 dt
    (= 1 rad at v = 10, dt = 0.25). Speeds stay within [0, max_speed]."""
    quarter = P.replace(dt=0.25)
    step = lambda ego, a, s: np.asarray(BICYCLE(jnp.asarray(ego), a, s, quarter))
    np.testing.assert_allclose(step([0.0, 2.0, 0.0, 10.0], 2.0, 0.0), [2.5, 2.0, 0.0, 10.5])
    steer = math.atan(2 * math.tan(math.pi / 6))
    np.testing.assert_allclose(
        step([0.0, 0.0, 0.0, 10.0], 0.0, steer), [2.5 * math.cos(math.pi / 6), 1.25, 1.0, 10.0]
    )
    assert step([0.0, 0.0, 0.0, 0.5], -4.0, 0.0)[3] == 0.0
    assert step([0.0, 0.0, 0.0, 39.5], 4.0, 0.0)[3] == P.max_speed


def test_idm_and_the_leader_search_at_hand_computed_values():
    """IDM: 1.5 from rest on a free road, 0 at the desired speed, and behind a leader at the
    same speed 20 m ahead, s* = 2 + 10 x 1.5 = 17: 1.5 (1 - 0.5^4 - (17 / 20)^2) = 0.3225.
    Leaders: the nearest obstacle ahead that overlaps sideways, across the ring's seam."""
    idm = lambda v, want, gap, lead: float(IDM(v, want, jnp.float32(gap), lead, P))
    assert idm(0.0, 20.0, jnp.inf, 0.0) == pytest.approx(1.5)
    assert idm(20.0, 20.0, jnp.inf, 0.0) == pytest.approx(0.0, abs=1e-6)
    assert idm(10.0, 20.0, 20.0, 10.0) == pytest.approx(0.3225, rel=1e-5)
    assert idm(20.0, 20.0, 1.0, 0.0) == -driving.IDM_MAX_BRAKE
    # cars at x = 0 (lane y 2) and x = 395 (y 2); obstacles at x = 25 (y 2), x = 10 (y 6,
    # the next lane: ignored), x = 5 (y 2, speed 7)
    gap, lead_v = LEADERS(
        jnp.array([0.0, 395.0]),
        jnp.array([2.0, 2.0]),
        jnp.array([25.0, 10.0, 5.0]),
        jnp.array([2.0, 6.0, 2.0]),
        jnp.array([9.0, 8.0, 7.0]),
        jnp.full(3, 5.0),
        jnp.full(3, 2.0),
        jnp.ones((2, 3), bool),
        P,
    )
    np.testing.assert_allclose(gap, [0.0, 5.0])  # bumper gaps: 5 - 5 and 10 - 5
    np.testing.assert_allclose(lead_v, [7.0, 7.0])
    gap, _ = LEADERS(
        jnp.array([0.0]), jnp.array([2.0]), jnp.array([25.0]), jnp.array([2.0]),
        jnp.array([9.0]), jnp.full(1, 5.0), jnp.full(1, 2.0), jnp.ones((1, 1), bool), P,
    )  # fmt: skip
    np.testing.assert_allclose(gap, [20.0])


def test_meta_actions_change_lane_and_speed_and_the_controller_tracks_them():
    """Lane left from lane 1 and faster on an empty road: within 8 s the car is within 0.5 m
    of lane 2's centre (y = 10) at the new target speed 25 + 5; every reward is the speed
    term 1 - |v / 30 - 1|, less the lane change's 0.05 at the one step it crosses y = 8."""
    params = P.replace(traffic_density=0.0)
    state = scene(ego=(0.0, 6.0, 0.0, 25.0), params=params)
    actions = [driving.LANE_LEFT, driving.FASTER] + [driving.IDLE] * 14  # 8 s
    changes = 0
    for t, action in enumerate(actions):
        y = float(np.asarray(state.ego)[1])
        _, state, reward, done, _ = STEP(jax.random.key(t), state, action, params)
        state = host(state)  # the scene's argument types: STEP compiles once
        crossed = (y < 8.0) != (float(state.ego[1]) < 8.0)
        speed_term = 1.0 - abs(float(state.ego[3]) / 30.0 - 1.0)
        assert float(reward) == pytest.approx(speed_term - 0.05 * crossed, abs=1e-5)
        assert not done
        changes += crossed
    assert changes == 1
    assert int(state.target_lane) == 2 and float(state.target_speed) == 30.0
    assert abs(float(state.ego[1]) - 10.0) < 0.5 and abs(float(state.ego[3]) - 30.0) < 0.2


def test_the_headway_cost_follows_the_two_second_rule_ahead_and_in_the_target_lane():
    """Behind a car at its own 20 m/s with a 20 m bumper gap (a 1 s time gap, half of
    safe_headway 2 s) the reward is the speed term less headway_cost x 0.5; at 40 m, or
    with headway_cost 0, nothing is taken. Steering left towards a car alongside (its
    centre 1 m behind: a bumper gap of -4 m) costs the whole headway_cost at once, two steps
    before the boxes would touch; the same car one lane further away costs nothing."""
    speed_term = 20.0 / 30.0
    reward = lambda state, action=driving.IDLE, params=P: float(
        STEP(jax.random.key(0), state, action, params)[2]
    )
    assert reward(scene(cars=[(125.0, 1, 20.0)])) == pytest.approx(speed_term - 0.5, abs=1e-4)
    assert reward(scene(cars=[(145.0, 1, 20.0)])) == pytest.approx(speed_term, abs=1e-4)
    free = P.replace(headway_cost=0.0)
    assert reward(scene(cars=[(125.0, 1, 20.0)]), params=free) == pytest.approx(speed_term)
    alongside = scene(cars=[(99.0, 2, 20.0)])
    assert reward(alongside, driving.LANE_LEFT) == pytest.approx(speed_term - 1.0, abs=1e-4)
    assert reward(alongside, driving.LANE_RIGHT) == pytest.approx(speed_term, abs=1e-4)
    assert reward(alongside) == pytest.approx(speed_term, abs=1e-4)


# ------------------------------------------------------------------------------ events


def test_collisions_and_near_misses_on_hand_made_scenes():
    """Ego at x = 100 in lane 1 (y = 6). Cars: 4 m ahead in its lane touch it (boxes 5 m
    long), 6 m ahead do not, one beside it in the next lane (dy 4 > 2) does not. Pedestrians
    (radius 0.5) in front of its bumper (x + 2.5): 0.3 m away -> touch, 1.5 m of clearance ->
    near miss (< 2 m), 3 m -> neither."""
    events = lambda s: observe(s)[1]
    car = lambda dx, lane=1: (100.0 + dx, lane, 20.0)
    assert events(scene(cars=[car(4.0)]))["collided"]
    assert events(scene(cars=[car(-4.9)]))["collided"]
    assert not events(scene(cars=[car(6.0)]))["collided"]
    assert not events(scene(cars=[car(0.0, 2), car(0.0, 0)]))["collided"]
    ped = lambda clearance: (100.0 + 2.5 + 0.5 + clearance, 6.0, 1.4)
    for clearance, hit, near in [(-0.2, True, False), (1.5, False, True), (3.0, False, False)]:
        e = events(scene(peds=[ped(clearance)]))
        assert e["collided"] == hit
        assert e["near_miss"] == near
        assert e["pedestrian_clearance"] == pytest.approx(max(clearance, 0.0), abs=1e-4)
    # the car touching the ego is observed even with five cars nearer its centre line
    crowd = [car(dx, lane) for dx in (-1.0, 1.0) for lane in (0, 2)] + [car(4.5), car(0.5, 3)]
    assert events(scene(cars=crowd))["collided"]


def test_a_collision_or_leaving_the_road_ends_the_episode_and_costs():
    """At 20 m/s (speed term 20 / 30) the ego closes 5 m on a car at 10 m/s 6 m ahead and
    touches it: done, collision_cost 10 off and the whole headway_cost 1 (a time gap of 0);
    heading off the right edge: offroad_cost 10."""
    state = scene(cars=[(106.0, 1, 10.0)])
    _, _, reward, done, _ = STEP(jax.random.key(0), state, driving.IDLE, P)
    assert bool(done) and float(reward) == pytest.approx(20.0 / 30.0 - 10.0 - 1.0, abs=1e-3)
    _, _, reward, done, _ = STEP(
        jax.random.key(0), scene(ego=(0.0, 0.1, -0.3, 20.0)), driving.IDLE, P
    )
    assert bool(done) and float(reward) < -9.0
    _, _, _, done, _ = STEP(jax.random.key(0), scene(), driving.IDLE, P)
    assert not bool(done)


def test_episode_metrics_count_per_1000_steps_from_the_observations():
    """Four steps: near, near, far, near (pedestrian clearance 1, 1, 5, 1.5 m) then a
    collision at the fifth; the sixth step is past the episode's end. Near misses are
    onsets: 2 in 5 steps = 400 per 1,000; one collision = 200; the speed is the ego's."""
    ped = lambda clearance: [(100.0 + 3.0 + clearance, 6.0, 1.4)]
    scenes = [scene(peds=ped(c)) for c in (1.0, 1.0, 5.0, 1.5)]
    scenes += [scene(cars=[(103.0, 1, 20.0)]), scene(peds=ped(1.0))]
    obs = np.stack([observe(s)[0] for s in scenes])
    valid = np.array([True] * 5 + [False])
    values = METRICS(obs, valid)
    metric = lambda name: float(values[name])
    assert metric("collisions_per_1000_steps") == pytest.approx(200.0)
    assert metric("near_misses_per_1000_steps") == pytest.approx(400.0)
    assert metric("mean_speed") == pytest.approx(20.0, rel=1e-6)
    assert metric("distance") == pytest.approx(5 * 20.0 * P.dt, rel=1e-6)


def test_pedestrians_cross_and_leave_and_none_at_rate_zero():
    """At pedestrian_rate 1 / dt one starts at every step until the slots are full, each
    pedestrian_ahead_min..max ahead of the ego on a sidewalk walking across; at rate 0 none
    ever does."""
    state = scene(ego=(0.0, 6.0, 0.0, 0.0))
    busy = P.replace(pedestrian_rate=1.0 / P.dt)
    spawn, walk = jax.jit(driving.spawn_pedestrian), jax.jit(driving.step_traffic)
    for t in range(PED + 1):
        state = host(spawn(jax.random.key(t), state, busy))
    assert bool(state.ped_active.all())
    assert np.all((state.ped_x >= 30.0) & (state.ped_x <= 100.0))
    road = 3 * 4.0
    side = np.asarray(state.ped_y)
    assert np.all(np.isin(side, [-1.0, road + 1.0]))
    np.testing.assert_array_equal(np.sign(state.ped_vy), np.where(side < 0, 1.0, -1.0))
    for _ in range(int((road + 2.5) / 1.4 / P.dt) + 1):  # long enough to cross
        state = host(walk(state, busy))
    assert not bool(state.ped_active.any())
    quiet = scene(ego=(0.0, 6.0, 0.0, 0.0))
    for t in range(50):
        quiet = host(spawn(jax.random.key(t), quiet, P))
    assert not bool(quiet.ped_active.any())


def test_the_lead_car_and_the_clearance_potential():
    empty, free = observe(scene())
    close, near = observe(scene(cars=[(112.0, 1, 15.0), (108.0, 2, 10.0)]))  # gap 7 m, one beside
    assert free["clearance"] == 0.0
    assert near["clearance"] == pytest.approx(-(1 - 7.0 / 60.0), rel=1e-5)
    # lead_car: the gap as g / (g + 10 m), the closing speed / 30
    np.testing.assert_allclose(close[7:9], [7.0 / 17.0, 5.0 / 30.0], rtol=1e-5)
    np.testing.assert_allclose(empty[7:9], [1.0, 0.0])
    # lane_gaps: lane 0 free, lane 1 the lead car, lane 2 a car 8 m ahead at 10 m/s (its
    # bumper 3 m ahead, closing 10 m/s); on the left lane (2) of three, the left is a wall
    np.testing.assert_allclose(
        close[9:21],
        [1, 0, 1, 0, 7 / 17, 5 / 30, 1, 0, 3 / 13, 10 / 30, 1, 0],
        rtol=1e-5,
        atol=1e-6,
    )
    left, walled = observe(scene(ego=(100.0, 10.0, 0.0, 20.0), cars=[(90.0, 1, 25.0)]))
    wall = [0, 0, 0, 0]
    np.testing.assert_allclose(left[9:21], [1, 0, 5 / 15, 5 / 30, 1, 0, 1, 0, *wall], atol=1e-6)
    # a car alongside in the next lane, its centre 1 m behind: a bumper gap of -4 m, so
    # that how far it overlaps is seen
    beside, seen = observe(scene(cars=[(99.0, 2, 20.0)]))
    np.testing.assert_allclose(beside[17:21], [1.0, 0.0, -4 / 14, 0.0], atol=1e-6)
    # the gaps' inverse (observed_gap of obs[7:21]) gives the metres back: -4 m alongside,
    # 7 m to the lead car and in its lane, 0 at a wall, inf where the road is free
    np.testing.assert_allclose(seen["observed_gap"][[12, 0]], [-4.0, np.inf], rtol=1e-5)
    np.testing.assert_allclose(near["observed_gap"][[0, 6]], [7.0, 7.0], rtol=1e-5)
    assert walled["observed_gap"][10] == 0.0


# ------------------------------------------------------------------------------ batches


def take3(tree, i):
    """Three copies of element i of each leaf [B, ...], as numpy arrays: no eager compiles,
    and the same argument types as `host`'s (a weak-typed leaf would compile again)."""
    return jax.tree.map(lambda x: np.stack([np.asarray(x)[i]] * 3), tree)


def host(tree):
    return jax.tree.map(np.asarray, tree)


@pytest.mark.parametrize("env_id", [DRIVING, CONTINUOUS])
def test_reset_is_deterministic_in_the_key(env_id):
    reset = RESET if env_id == DRIVING else batch_reset(env_id)
    keys = jnp.stack([jax.random.key(7), jax.random.key(7), jax.random.key(8)])
    params = take3(stack_params(env_id, P, [{}]), 0)
    obs, state = reset(keys, params)
    a, b, c = (take3((obs, state), i) for i in range(3))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.allclose(a[1].inner.car_x, c[1].inner.car_x)


def test_road_layouts_of_different_lane_counts_and_densities_step_in_one_jit():
    """One, two and four lanes, sparse to dense, in one vmapped program: each has its own
    number of cars, in its own lanes, none starting on the ego or on each other, and a
    step of the batch is each one's step alone."""
    env = Env(DRIVING)
    fields = [
        {"num_lanes": 1, "traffic_density": 10.0},
        {"num_lanes": 2, "traffic_density": 20.0, "pedestrian_rate": 0.5},
        {"num_lanes": 4, "traffic_density": 10.0},
    ]
    params = stack_params(DRIVING, env.default_params, fields)
    obs, state = RESET(jnp.stack([jax.random.key(0)] * 3), host(params))
    inner = host(state.inner)
    np.testing.assert_array_equal(inner.car_active.sum(1), [4, 16, 16])
    for i, f in enumerate(fields):
        lanes = np.asarray(inner.car_lane[i])[np.asarray(inner.car_active[i])]
        assert set(lanes) == set(range(f["num_lanes"]))
        assert 0 <= int(inner.target_lane[i]) < f["num_lanes"]
        x = np.asarray(inner.car_x[i])[np.asarray(inner.car_active[i])]
        assert np.all((x > 14.0) & (x < 386.0))  # the spawn gap around the ego at 0
        for lane in set(lanes):
            spots = np.sort(x[lanes == lane])
            assert np.all(np.diff(spots) > driving.CAR_LENGTH)
    # the env's own step (the wrapper's adds the auto-reset: twice the compile)
    step = jax.jit(jax.vmap(driving.Driving().step_env, in_axes=(None, 0, None, 0)))
    faster = np.int32(driving.FASTER)
    after = np.asarray(step(jax.random.key(1), host(inner), faster, host(params))[0])
    for i in range(3):  # the same program on three copies of layout i alone
        alone = step(jax.random.key(1), take3(inner, i), faster, take3(params, i))[0]
        np.testing.assert_allclose(after[i], np.asarray(alone)[0], rtol=1e-5, atol=1e-5)
    assert float(after[0, 1]) == pytest.approx(1 - float(after[0, 0]), abs=1e-5)


# ------------------------------------------------------------------------------ agents


# q_learning: 12 states, the lateral position (3 bins over the three lanes) x speed (4)
BINS = [3, 1, 1, 4] + [1] * (driving.OBS_SIZE - 4)
LOW = [0.0] * driving.OBS_SIZE
HIGH = [3.0, 1.0, 1.0, 1.5] + [1.0] * (driving.OBS_SIZE - 4)


@pytest.mark.parametrize(
    "overrides",
    [
        # highway and urban (pedestrians) in one program, shaped and not
        [
            "agent=ppo",
            "env=driving",
            "agent.num_steps=16",
            "env.variants.pedestrian_rate=[0.0,0.5]",
            "+shaping.name=clearance",
            "+shaping.weight=[0.0,1.0]",
        ],
        ["agent=dqn", "env=driving_urban", "agent.num_steps=16", "agent.num_minibatches=2"],
        ["agent=reinforce", "env=driving_continuous", "agent.num_steps=16"],
        [
            "agent=q_learning",
            "env=driving",
            f"+env.discretize={{bins: {BINS}, low: {LOW}, high: {HIGH}}}",
        ],
    ],
    ids=["ppo-variants-shaped", "pqn-urban", "reinforce-continuous", "q_learning"],
)
def test_every_agent_runs_on_driving(overrides):
    tiny = TINY[:-1] if "agent=q_learning" in overrides else TINY  # no network
    prepared, result = train(*tiny, *overrides)
    assert np.isfinite(result.metrics["episode_return"][:, -1]).all()


def crashed(obs, valid, params):
    """1 for an episode (obs [T, OBS_SIZE] of its steps: valid [T]) that ends in a
    collision, else 0: the evaluation's mean is the fraction of episodes that crash."""
    return jnp.any(driving.collided(obs, params) & valid).astype(jnp.float32)


def evaluate_highway(prepared, result, episodes, key=jax.random.key(100)):
    """{"crashed": fraction of episodes that crash, "mean_speed": m/s} [R] of each run's
    greedy policy over `episodes` 80-step episodes on its own env params (one program per
    metric for all runs)."""
    runs = len(prepared.runs)
    keys = jax.random.split(key, runs)
    metrics = {"crashed": ObservedMetric(crashed), **driving.EPISODE_METRICS}
    out = {}
    for name in ("crashed", "mean_speed"):
        evaluate = make_evaluate(prepared.agent, prepared.env, episodes, 80, metrics[name])
        values = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, 0, 0, None)))(
            result.agent_states, prepared.runs.hparams, prepared.runs.env_params, keys, 0.0
        )
        out[name] = np.asarray(values)
    return out


@pytest.mark.slow
def test_ppo_learns_to_drive_on_the_highway_crashing_in_at_most_3_of_256_episodes():
    """PPO, 300k steps (28 s in all on 2 cores), on the highway's own reward (the speed
    term, less the two-second rule's headway cost, lane changes and the collision cost):
    the greedy policy of each of 2 seeds drives 256 highway episodes with at most 3 ending
    in a collision (1.2%), at a mean speed above 22 m/s. On the same 80-step episodes a
    uniformly random policy collides 37 times per 1,000 steps, always idling 12.7 (both
    about 24-25 m/s).

    Measured: these 2 seeds, 0 of 256 each with this key and with key 200; 8 seeds x 256
    episodes in one program, 0 of 2,048 with key 100 and 7 of 2,048 with key 200 (0-3 per
    seed), at 23.5-23.8 m/s; 9 of 4,096 over 512 other episodes per seed (7 into the lead
    car in its lane). Not collision-free, then: about 1 episode in 500. Before the headway
    cost and the signed lane gaps (research/envs/driving.py), 6-10% of episodes crashed
    (2.5 collisions per 1,000 steps): into a slower lead car while alternating faster /
    slower, and changing lanes into a car alongside, whose overlap the clipped gaps hid.
    600k steps with 64 envs: 4 of 4,096 (not clearly fewer); on intermediate versions of
    the reward, a collision_cost of 30 or 100, gamma 0.99 or ent_coef 0.002 left 0-6
    crashes per 512 episodes."""
    prepared, result = train(*HIGHWAY_PPO)
    values = evaluate_highway(prepared, result, 256)
    assert np.all(values["crashed"] * 256 <= 3), values
    assert np.all(values["mean_speed"] > 22.0), values


HIGHWAY_PPO = [
    "progress=false",
    "plot=false",
    "agent=ppo",
    "env=driving",
    "runs.seeds=2",
    "train.total_timesteps=300000",
    "train.num_logs=4",
    "agent.num_envs=32",
    "agent.num_steps=64",
    "agent.num_minibatches=8",
    "agent.normalize_obs=true",
    "agent.gamma=0.95",
    "agent.lr=3e-3",
]
