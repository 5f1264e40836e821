"""Driving in traffic: an ego car on a multi-lane road among other cars and crossing
pedestrians (gymnax API, jitted and vmapped like the arm and the market).

The road is straight, `num_lanes` lanes of `lane_width` (lane 0 on the right, y = 0 its
right edge, y grows to the left), and periodic: every longitudinal position lives on a ring
of `road_length` metres around which the traffic circulates, and every relative position
is wrapped into [-road_length / 2, road_length / 2). So a fixed number of cars keeps the
density around the ego constant however far it drives (its odometer is kept apart).
Array shapes are static: MAX_LANES, MAX_VEHICLES and MAX_PEDESTRIANS slots; the traced
`num_lanes`, the car count (traffic_density x road_length x num_lanes) and the pedestrians
crossing at the moment are masks over them, so a batch of EnvParams with different lane
counts and densities runs in one program.

Other cars keep their lane and follow the intelligent driver model (IDM) behind the nearest
obstacle ahead that overlaps them sideways (a car, the ego, a pedestrian on the road), each
with its own desired speed drawn uniformly in traffic_speed +- traffic_speed_spread.
Pedestrians: after each step, with probability pedestrian_rate x dt, one starts crossing the
road at pedestrian_speed from a random side, between pedestrian_ahead_min and
pedestrian_ahead_max metres ahead of the ego; it leaves when it reaches the far side or the
ego is 20 m past it.

The ego is a kinematic bicycle (centre of gravity half-way along the wheelbase):

    beta = atan(tan(steer) / 2),   x += v cos(psi + beta) dt,   y += v sin(psi + beta) dt,
    psi += v sin(beta) / (wheelbase / 2) dt,   v = clip(v + accel dt, 0, max_speed).

`Driving-v0` takes highway-env's five meta-actions (0 lane left, 1 idle, 2 lane right,
3 faster, 4 slower by speed_step): they set a target lane and a target speed that a
proportional controller tracks (acceleration and steering, within max_accel and
max_steering). `DrivingContinuous-v0` takes (acceleration, steering) in [-1, 1]^2, scaled by
max_accel and max_steering.

Reward per step: speed_weight (1 - |v / speed_limit - 1|) (best at the limit)
- pedestrian_cost x (1 - clearance / pedestrian_safe_distance)^+ of the nearest pedestrian
- headway_cost x (1 - time gap / safe_headway)^+ (the two-second rule: the time gap is the
bumper gap over the ego's speed, to the lead car and to the nearest cars ahead and behind in
the lane it is heading for, negative for a car alongside) - lane_change_cost when the ego's
lane changed - collision_cost on a collision - offroad_cost when the ego's centre leaves the
road. A collision (the ego's box overlaps a car's, both
axis-aligned CAR_LENGTH x CAR_WIDTH, or a pedestrian's disc) or leaving the road terminates
the episode; it truncates after max_steps_in_episode steps.

Observation [OBS_SIZE = 57]: the ego [21] (y and the distance to the left edge in lane
widths, heading, speed / SPEED_SCALE, speed_limit / SPEED_SCALE, the target lane's offset in
lane widths, the target speed / SPEED_SCALE, the bumper gap (as `gap_feature`) and closing
speed / SPEED_SCALE of the car ahead that overlaps it sideways (`lead_car`), and the gaps
and closing speeds ahead and behind in the lanes right, at and left of it: `lane_gaps`), then the
NEAREST_VEHICLES nearest cars and
the NEAREST_PEDESTRIANS nearest pedestrians (nearest by box clearance, so anything the ego
touches is seen), each [4]: present (0 / 1), dx / DISTANCE_SCALE, dy / lane_width, and the
relative longitudinal speed / SPEED_SCALE (cars) or the crossing speed in m/s (pedestrians);
zeros where no one is. Collisions, near misses and the episode metrics are all computed
from this observation, so the evaluation's metrics and the env's termination agree exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from research.envs.registry import (
    NONNEGATIVE,
    POSITIVE,
    EnvEntry,
    ObservedMetric,
    Range,
    register,
)

MAX_LANES = 4
MAX_VEHICLES = 16
MAX_PEDESTRIANS = 4
NEAREST_VEHICLES = 5
NEAREST_PEDESTRIANS = 2
CAR_LENGTH, CAR_WIDTH = 5.0, 2.0  # m, every car
PEDESTRIAN_RADIUS = 0.5  # m
SPEED_SCALE, DISTANCE_SCALE = 30.0, 100.0  # observation units: O(1) inputs
GAP_SCALE = 10.0  # m: a bumper gap g is observed as g / (|g| + GAP_SCALE) (see gap_feature)
EGO_SIZE, SLOT_SIZE = 21, 4
OBS_SIZE = EGO_SIZE + SLOT_SIZE * (NEAREST_VEHICLES + NEAREST_PEDESTRIANS)
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(5)
# IDM constants (Treiber et al. 2000): maximum and comfortable acceleration, jam distance,
# acceleration exponent, and the hardest braking a car can do.
IDM_ACCEL, IDM_COMFORT, IDM_JAM_GAP, IDM_DELTA, IDM_MAX_BRAKE = 1.5, 2.0, 2.0, 4.0, 9.0
# Meta-action controller: time constants (s) of the speed, lateral-position and heading loops.
TAU_SPEED, TAU_LATERAL, TAU_HEADING = 0.6, 1.5, 0.4
VEHICLE_SPAWN_GAP = 15.0  # m: no car starts nearer the ego than this, longitudinally
PEDESTRIAN_PASSED = 20.0  # m behind the ego, a pedestrian leaves


@struct.dataclass
class DrivingState(environment.EnvState):
    ego: jax.Array  # [4] x (on the ring), y, heading, speed
    target_lane: jax.Array  # [] int32: the meta-actions' lane
    target_speed: jax.Array  # [] m / s: the meta-actions' speed
    odometer: jax.Array  # [] m driven along the road
    car_x: jax.Array  # [MAX_VEHICLES] on the ring
    car_lane: jax.Array  # [MAX_VEHICLES] int32
    car_speed: jax.Array  # [MAX_VEHICLES]
    car_desired: jax.Array  # [MAX_VEHICLES] IDM desired speeds
    car_active: jax.Array  # [MAX_VEHICLES] bool
    ped_x: jax.Array  # [MAX_PEDESTRIANS] on the ring
    ped_y: jax.Array  # [MAX_PEDESTRIANS]
    ped_vy: jax.Array  # [MAX_PEDESTRIANS] crossing velocity (sign: direction)
    ped_active: jax.Array  # [MAX_PEDESTRIANS] bool


@struct.dataclass
class DrivingParams(environment.EnvParams):
    """Defaults: the highway (`HIGHWAY` is {}); `URBAN` gives the city streets."""

    num_lanes: int = 3
    lane_width: float = 4.0  # m
    road_length: float = 400.0  # m of ring the traffic circulates on
    traffic_density: float = 10.0  # cars per km per lane
    traffic_speed: float = 25.0  # m / s, mean desired speed of the other cars
    traffic_speed_spread: float = 3.0  # m / s, half-width of their uniform spread
    idm_headway: float = 1.5  # s, IDM's safe time headway
    speed_limit: float = 30.0  # m / s: the speed reward peaks here
    max_speed: float = 40.0  # m / s, the ego's top speed
    max_accel: float = 4.0  # m / s^2, either sign
    max_steering: float = 0.4  # rad
    wheelbase: float = 2.5  # m
    speed_step: float = 5.0  # m / s per faster / slower meta-action
    dt: float = 0.5  # s per step (a decision every 0.5 s: at 0.25 PPO learnt far slower)
    pedestrian_rate: float = 0.0  # crossings per second
    pedestrian_speed: float = 1.4  # m / s
    pedestrian_ahead_min: float = 30.0  # m ahead of the ego where crossings start
    pedestrian_ahead_max: float = 100.0
    near_miss_distance: float = 2.0  # m of clearance: closer is a near miss
    pedestrian_safe_distance: float = 10.0  # m of clearance where the pedestrian cost starts
    speed_weight: float = 1.0
    collision_cost: float = 10.0
    pedestrian_cost: float = 0.0
    lane_change_cost: float = 0.05
    offroad_cost: float = 10.0
    headway_cost: float = 1.0  # per step at a time gap of 0 (see the module docstring)
    safe_headway: float = 2.0  # s: the headway cost starts under this time gap
    max_steps_in_episode: int = 80  # 40 s


HIGHWAY: dict[str, float] = {}
URBAN: dict[str, float] = {
    "num_lanes": 2,
    "road_length": 300.0,
    "traffic_density": 25.0,
    "traffic_speed": 11.0,
    "traffic_speed_spread": 2.0,
    "speed_limit": 14.0,
    "speed_step": 3.0,
    "pedestrian_rate": 0.1,
    "pedestrian_ahead_min": 20.0,
    "pedestrian_ahead_max": 80.0,
    "pedestrian_cost": 2.0,
    "collision_cost": 20.0,
}

RANGES = {
    **{
        name: POSITIVE
        for name in (
            "lane_width",
            "road_length",
            "traffic_speed",
            "idm_headway",
            "speed_limit",
            "max_speed",
            "max_accel",
            "max_steering",
            "wheelbase",
            "speed_step",
            "dt",
            "pedestrian_speed",
            "pedestrian_safe_distance",
            "safe_headway",
        )
    },
    **{
        name: NONNEGATIVE
        for name in (
            "traffic_density",
            "traffic_speed_spread",
            "pedestrian_rate",
            "pedestrian_ahead_min",
            "near_miss_distance",
            "speed_weight",
            "collision_cost",
            "pedestrian_cost",
            "lane_change_cost",
            "offroad_cost",
            "headway_cost",
        )
    },
    "num_lanes": Range(low=1, high=MAX_LANES, why=f"MAX_LANES = {MAX_LANES} lane slots"),
    "pedestrian_ahead_max": POSITIVE,
}


def num_cars(params: DrivingParams) -> jax.Array:
    """Cars on the ring [] int32: traffic_density x road km x lanes, rounded."""
    count = params.traffic_density * params.road_length / 1000.0 * params.num_lanes
    return jnp.floor(count + 0.5).astype(jnp.int32)


def check_params(params: DrivingParams) -> tuple[str, str] | None:
    """(field, what is allowed) for the first inconsistent combination, else None."""
    if float(params.num_lanes) != int(params.num_lanes):
        return "num_lanes", f"an int with 1 <= x <= {MAX_LANES}"
    cars = params.traffic_density * params.road_length / 1000.0 * params.num_lanes
    if cars + 0.5 >= MAX_VEHICLES + 1:
        most = MAX_VEHICLES * 1000.0 / (params.road_length * params.num_lanes)
        return "traffic_density", (
            f"at most {most:.4g} cars / km / lane here (MAX_VEHICLES = {MAX_VEHICLES} on "
            f"road_length x num_lanes = {params.road_length:g} m x {params.num_lanes})"
        )
    if params.pedestrian_rate * params.dt > 1.0:
        return "pedestrian_rate", f"at most 1 / dt = {1.0 / params.dt:g} crossings per second"
    if not params.pedestrian_ahead_min < params.pedestrian_ahead_max:
        return "pedestrian_ahead_min", f"< pedestrian_ahead_max = {params.pedestrian_ahead_max:g}"
    if not params.pedestrian_ahead_max < params.road_length / 2:
        return "pedestrian_ahead_max", f"< road_length / 2 = {params.road_length / 2:g}"
    if not params.traffic_speed_spread < params.traffic_speed:
        return "traffic_speed_spread", f"< traffic_speed = {params.traffic_speed:g}"
    return None


def wrap(dx: jax.Array, params: DrivingParams) -> jax.Array:
    """Longitudinal offsets [...] wrapped into [-road_length / 2, road_length / 2)."""
    half = params.road_length / 2
    return (dx + half) % params.road_length - half


def bicycle_step(
    ego: jax.Array, accel: jax.Array, steer: jax.Array, params: DrivingParams
) -> jax.Array:
    """One explicit Euler step of the kinematic bicycle: ego [4] (x, y, heading, speed) ->
    [4]; the position moves at the old speed; x is not wrapped (the caller does)."""
    x, y, psi, v = ego[0], ego[1], ego[2], ego[3]
    beta = jnp.arctan(jnp.tan(steer) / 2.0)
    return jnp.stack(
        [
            x + v * jnp.cos(psi + beta) * params.dt,
            y + v * jnp.sin(psi + beta) * params.dt,
            psi + v * jnp.sin(beta) / (params.wheelbase / 2.0) * params.dt,
            jnp.clip(v + accel * params.dt, 0.0, params.max_speed),
        ]
    )


def track(
    ego: jax.Array, lane: jax.Array, speed: jax.Array, params: DrivingParams
) -> tuple[jax.Array, jax.Array]:
    """(acceleration [], steering []) that steer ego [4] towards the centre of `lane` and
    its speed towards `speed`: proportional loops on speed, lateral offset -> heading ->
    yaw rate, then the steering that gives that yaw rate (bicycle model inverted)."""
    y, psi, v = ego[1], ego[2], ego[3]
    accel = jnp.clip((speed - v) / TAU_SPEED, -params.max_accel, params.max_accel)
    offset = (lane + 0.5) * params.lane_width - y
    moving = jnp.maximum(v, 1.0)
    heading = jnp.arcsin(jnp.clip(offset / TAU_LATERAL / moving, -1.0, 1.0))
    heading = jnp.clip(heading, -jnp.pi / 4, jnp.pi / 4)
    # faster than one step, the loop would overshoot under explicit Euler; with these time
    # constants a lane change at dt = 0.5 settles in about 2.5 s, overshooting by 0.1 m
    yaw_rate = (heading - psi) / jnp.maximum(TAU_HEADING, params.dt)
    beta = jnp.arcsin(jnp.clip(yaw_rate * params.wheelbase / 2.0 / moving, -1.0, 1.0))
    steer = jnp.arctan(2.0 * jnp.tan(beta))
    return accel, jnp.clip(steer, -params.max_steering, params.max_steering)


def idm_accel(
    v: jax.Array, desired: jax.Array, gap: jax.Array, lead_v: jax.Array, params: DrivingParams
) -> jax.Array:
    """IDM acceleration [...]: speeds, desired speeds, bumper gaps (inf: free road) and the
    leader's speed [...]; within [-IDM_MAX_BRAKE, IDM_ACCEL]."""
    dv = v - lead_v
    brake = v * dv / (2.0 * jnp.sqrt(IDM_ACCEL * IDM_COMFORT))
    wanted = IDM_JAM_GAP + v * params.idm_headway + brake
    interaction = jnp.where(
        jnp.isinf(gap), 0.0, (jnp.maximum(wanted, 0.0) / jnp.maximum(gap, 0.1)) ** 2
    )
    free = (v / jnp.maximum(desired, 0.1)) ** IDM_DELTA
    return jnp.clip(IDM_ACCEL * (1.0 - free - interaction), -IDM_MAX_BRAKE, IDM_ACCEL)


def leaders(
    x: jax.Array,
    y: jax.Array,
    obstacle_x: jax.Array,
    obstacle_y: jax.Array,
    obstacle_v: jax.Array,
    obstacle_length: jax.Array,
    obstacle_width: jax.Array,
    obstacle_on: jax.Array,
    params: DrivingParams,
) -> tuple[jax.Array, jax.Array]:
    """(bumper gap [V], leader speed [V]) of cars at x, y [V] behind the nearest obstacle
    [O] ahead that overlaps them sideways; gap inf where the road ahead is free. A car is
    not its own leader: the caller passes its own slot switched off (obstacle_on [V, O])."""
    dx = wrap(obstacle_x[None, :] - x[:, None], params)
    side = jnp.abs(obstacle_y[None, :] - y[:, None]) < (obstacle_width[None, :] + CAR_WIDTH) / 2
    ahead = obstacle_on & side & (dx > 0)
    gap = jnp.where(ahead, dx - (obstacle_length[None, :] + CAR_LENGTH) / 2, jnp.inf)
    nearest = jnp.argmin(gap, axis=1)
    return jnp.min(gap, axis=1), obstacle_v[nearest]


def box_clearance(dx: jax.Array, dy: jax.Array, half_length, half_width) -> jax.Array:
    """Distance [...] between two axis-aligned boxes whose centres are dx, dy apart and whose
    half-sizes add up to half_length, half_width; 0 where they overlap."""
    gx = jnp.maximum(jnp.abs(dx) - half_length, 0.0)
    gy = jnp.maximum(jnp.abs(dy) - half_width, 0.0)
    return jnp.sqrt(gx**2 + gy**2)


def _nearest(
    rows: jax.Array, clearance: jax.Array, present: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """The k rows [k, F] of rows [S, F] with the smallest clearance [S] among the present [S],
    zeroed where fewer are present, and their clearances [k] (inf there)."""
    key = jnp.where(present, clearance, jnp.inf)
    _, index = jax.lax.top_k(-key, k)
    chosen = key[index]
    return jnp.where(jnp.isfinite(chosen)[:, None], rows[index], 0.0), chosen


def gap_feature(gap: jax.Array) -> jax.Array:
    """The observed form [...] of bumper gaps (m, finite; negative: overlapping alongside):
    g / (|g| + GAP_SCALE), in (-1, 1), fine where a metre matters (0.5 at 10 m, -0.33 for a
    car alongside) and coarse far away (0.91 at 100 m; g / DISTANCE_SCALE gave a car
    alongside -0.05)."""
    return gap / (jnp.abs(gap) + GAP_SCALE)


def observed_gap(feature: jax.Array) -> jax.Array:
    """The bumper gap (m) [...] of a gap_feature (its inverse); inf at 1 (a free road)."""
    inside = feature * GAP_SCALE / jnp.maximum(1.0 - jnp.abs(feature), 1e-6)
    return jnp.where(feature < 1.0, inside, jnp.inf)


def lead_car(state: DrivingState, params: DrivingParams) -> tuple[jax.Array, jax.Array]:
    """(gap_feature of the bumper gap, closing speed / SPEED_SCALE) [] of the nearest car
    ahead that overlaps the ego sideways (the one it would run into); (1, 0) when the road
    ahead is free for DISTANCE_SCALE metres. Picking it out of the nearest-car slots, whose order
    changes with every car that passes, is what PPO failed to learn in 800k steps."""
    dx = wrap(state.car_x - state.ego[0], params)
    dy = (state.car_lane + 0.5) * params.lane_width - state.ego[1]
    ahead = state.car_active & (dx > 0) & (jnp.abs(dy) < CAR_WIDTH)
    gap = jnp.where(ahead, dx - CAR_LENGTH, jnp.inf)
    lead = jnp.argmin(gap)
    free = ~jnp.isfinite(gap[lead]) | (gap[lead] > DISTANCE_SCALE)
    closing = state.ego[3] * jnp.cos(state.ego[2]) - state.car_speed[lead]
    return (
        jnp.where(free, 1.0, gap_feature(jnp.maximum(gap[lead], 0.0))),
        jnp.where(free, 0.0, closing / SPEED_SCALE),
    )


def lane_gaps(state: DrivingState, params: DrivingParams) -> jax.Array:
    """[3, 4] for the lanes right of, at and left of the ego's (`ego_lane`): the gap_feature
    of the bumper gap to the nearest car ahead, its closing speed / SPEED_SCALE, the same
    for the nearest car behind (highway-env's lane-wise view, which a lane change needs):
    gap 1 and closing 0 where none is within DISTANCE_SCALE, gap 0 where the lane does
    not exist (a wall). A car alongside in another lane has a negative gap (down to
    -CAR_LENGTH), so that how far it overlaps is seen: clipped at 0, PPO could not tell a
    car it was about to clear from one beside it and changed lanes into it."""
    dx = wrap(state.car_x - state.ego[0], params)
    v = state.ego[3] * jnp.cos(state.ego[2])
    lanes = ego_lane(state.ego[1], params) + jnp.arange(-1, 2)

    def nearest(lane, sign):
        there = state.car_active & (state.car_lane == lane) & (sign * dx > 0)
        gap = jnp.where(there, sign * dx - CAR_LENGTH, jnp.inf)
        i = jnp.argmin(gap)
        free = gap[i] > DISTANCE_SCALE
        closing = sign * (v - state.car_speed[i])
        return (
            jnp.where(free, 1.0, gap_feature(gap[i])),
            jnp.where(free, 0.0, closing / SPEED_SCALE),
        )

    def lane_row(lane):
        exists = (lane >= 0) & (lane < params.num_lanes)
        row = jnp.stack([*nearest(lane, 1.0), *nearest(lane, -1.0)])
        return jnp.where(exists, row, 0.0)

    return jax.vmap(lane_row)(lanes)


def observe(state: DrivingState, params: DrivingParams) -> jax.Array:
    """The observation [OBS_SIZE] of `state` (see the module docstring)."""
    x, y, psi, v = state.ego[0], state.ego[1], state.ego[2], state.ego[3]
    lw = params.lane_width
    ego = jnp.stack(
        [
            y / lw,
            params.num_lanes - y / lw,
            psi,
            v / SPEED_SCALE,
            params.speed_limit / SPEED_SCALE * jnp.ones(()),
            ((state.target_lane + 0.5) * lw - y) / lw,
            state.target_speed / SPEED_SCALE,
            *lead_car(state, params),
            *lane_gaps(state, params).reshape(-1),
        ]
    )
    car_dx, car_dy = wrap(state.car_x - x, params), (state.car_lane + 0.5) * lw - y
    cars = jnp.stack(
        [
            jnp.ones(MAX_VEHICLES),
            car_dx / DISTANCE_SCALE,
            car_dy / lw,
            (state.car_speed - v * jnp.cos(psi)) / SPEED_SCALE,
        ],
        -1,
    )
    clear = box_clearance(car_dx, car_dy, CAR_LENGTH, CAR_WIDTH)
    cars, _ = _nearest(cars, clear, state.car_active, NEAREST_VEHICLES)
    ped_dx, ped_dy = wrap(state.ped_x - x, params), state.ped_y - y
    peds = jnp.stack(
        [jnp.ones(MAX_PEDESTRIANS), ped_dx / DISTANCE_SCALE, ped_dy / lw, state.ped_vy], -1
    )
    clear = pedestrian_clearance(ped_dx, ped_dy)
    peds, _ = _nearest(peds, clear, state.ped_active, NEAREST_PEDESTRIANS)
    return jnp.concatenate([ego, cars.reshape(-1), peds.reshape(-1)]).astype(jnp.float32)


def pedestrian_clearance(dx: jax.Array, dy: jax.Array) -> jax.Array:
    """Clearance [...] between the ego's box and pedestrians dx, dy [...] from its centre (m);
    0 on contact."""
    reach = box_clearance(dx, dy, CAR_LENGTH / 2, CAR_WIDTH / 2) - PEDESTRIAN_RADIUS
    return jnp.maximum(reach, 0.0)


def _slots(obs: jax.Array, first: int, count: int) -> jax.Array:
    return obs[..., first : first + SLOT_SIZE * count].reshape(*obs.shape[:-1], count, SLOT_SIZE)


def observed_pedestrian_clearance(obs: jax.Array, params: DrivingParams) -> jax.Array:
    """Clearance [...] (m) of the nearest observed pedestrian in obs [..., OBS_SIZE]; inf
    where none is."""
    peds = _slots(obs, EGO_SIZE + SLOT_SIZE * NEAREST_VEHICLES, NEAREST_PEDESTRIANS)
    clear = pedestrian_clearance(peds[..., 1] * DISTANCE_SCALE, peds[..., 2] * params.lane_width)
    return jnp.min(jnp.where(peds[..., 0] > 0, clear, jnp.inf), axis=-1)


def collided(obs: jax.Array, params: DrivingParams) -> jax.Array:
    """[...] bool: the ego in obs [..., OBS_SIZE] touches a car or a pedestrian."""
    cars = _slots(obs, EGO_SIZE, NEAREST_VEHICLES)
    overlap = (jnp.abs(cars[..., 1] * DISTANCE_SCALE) < CAR_LENGTH) & (
        jnp.abs(cars[..., 2] * params.lane_width) < CAR_WIDTH
    )
    car_hit = jnp.any((cars[..., 0] > 0) & overlap, axis=-1)
    return car_hit | (observed_pedestrian_clearance(obs, params) <= 0.0)


def offroad(obs: jax.Array, params: Any = None) -> jax.Array:
    """[...] bool: the ego's centre is off the road (right of its right edge, left of its left)."""
    return (obs[..., 0] < 0.0) | (obs[..., 1] < 0.0)


def near_miss(obs: jax.Array, params: DrivingParams) -> jax.Array:
    """[...] bool: a pedestrian closer than near_miss_distance without contact."""
    clear = observed_pedestrian_clearance(obs, params)
    return (clear > 0.0) & (clear < params.near_miss_distance)


def ego_lane(y: jax.Array, params: DrivingParams) -> jax.Array:
    """Lane index [] int32 of a lateral position (off the road: the nearest lane)."""
    lane = jnp.floor(y / params.lane_width).astype(jnp.int32)
    return jnp.clip(lane, 0, params.num_lanes - 1)


def step_traffic(state: DrivingState, params: DrivingParams) -> DrivingState:
    """The other cars' IDM step and the pedestrians' walk (the ego is taken where it is)."""
    lw, dt = params.lane_width, params.dt
    car_y = (state.car_lane + 0.5) * lw
    # obstacles: the cars, then the ego, then the pedestrians on the road
    on_road = state.ped_active & (state.ped_y > 0) & (state.ped_y < params.num_lanes * lw)
    ox = jnp.concatenate([state.car_x, state.ego[:1], state.ped_x])
    oy = jnp.concatenate([car_y, state.ego[1:2], state.ped_y])
    ov = jnp.concatenate([state.car_speed, state.ego[3:4], jnp.zeros(MAX_PEDESTRIANS)])
    size = lambda car, ped: jnp.concatenate(
        [jnp.full(MAX_VEHICLES + 1, car), jnp.full(MAX_PEDESTRIANS, ped)]
    )
    on = jnp.concatenate([state.car_active, jnp.ones(1, bool), on_road])
    not_self = ~jnp.eye(MAX_VEHICLES, MAX_VEHICLES + 1 + MAX_PEDESTRIANS, dtype=bool)
    gap, lead_v = leaders(
        state.car_x,
        car_y,
        ox,
        oy,
        ov,
        size(CAR_LENGTH, 2 * PEDESTRIAN_RADIUS),
        size(CAR_WIDTH, 2 * PEDESTRIAN_RADIUS),
        on[None, :] & not_self,
        params,
    )
    accel = idm_accel(state.car_speed, state.car_desired, gap, lead_v, params)
    speed = jnp.maximum(state.car_speed + accel * dt, 0.0)
    car_x = (state.car_x + (state.car_speed + speed) / 2 * dt) % params.road_length
    ped_y = state.ped_y + state.ped_vy * dt
    crossed = jnp.where(state.ped_vy > 0, ped_y > params.num_lanes * lw + 1.0, ped_y < -1.0)
    passed = wrap(state.ped_x - state.ego[0], params) < -PEDESTRIAN_PASSED
    return state.replace(
        car_x=car_x,
        car_speed=speed,
        ped_y=ped_y,
        ped_active=state.ped_active & ~crossed & ~passed,
    )


def spawn_pedestrian(key: jax.Array, state: DrivingState, params: DrivingParams) -> DrivingState:
    """With probability pedestrian_rate x dt, a pedestrian starts crossing in the first free
    slot (none when every slot is taken)."""
    # one draw for the three: each random call costs its own compile time on CPU
    u = jax.random.uniform(key, (3,))
    start = u[0] < params.pedestrian_rate * params.dt
    free = ~state.ped_active
    slot = jnp.argmax(free)
    new = start & free[slot] & (jnp.arange(MAX_PEDESTRIANS) == slot)
    span = params.pedestrian_ahead_max - params.pedestrian_ahead_min
    ahead = params.pedestrian_ahead_min + u[1] * span
    from_right = u[2] < 0.5
    road = params.num_lanes * params.lane_width
    return state.replace(
        ped_x=jnp.where(new, (state.ego[0] + ahead) % params.road_length, state.ped_x),
        ped_y=jnp.where(new, jnp.where(from_right, -1.0, road + 1.0), state.ped_y),
        ped_vy=jnp.where(
            new, jnp.where(from_right, 1.0, -1.0) * params.pedestrian_speed, state.ped_vy
        ),
        ped_active=state.ped_active | new,
    )


class Driving(environment.Environment[DrivingState, DrivingParams]):
    """The five meta-actions: 0 lane left, 1 idle, 2 lane right, 3 faster, 4 slower."""

    @property
    def default_params(self) -> DrivingParams:
        return DrivingParams()

    def controls(
        self, action: Any, state: DrivingState, params: DrivingParams
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(acceleration, steering, target lane, target speed) the action asks for."""
        lane = state.target_lane + jnp.where(action == LANE_LEFT, 1, 0)
        lane = jnp.clip(lane - jnp.where(action == LANE_RIGHT, 1, 0), 0, params.num_lanes - 1)
        change = jnp.where(action == FASTER, 1.0, jnp.where(action == SLOWER, -1.0, 0.0))
        speed = jnp.clip(state.target_speed + change * params.speed_step, 0.0, params.max_speed)
        accel, steer = track(state.ego, lane, speed, params)
        return accel, steer, lane, speed

    def step_env(
        self, key: jax.Array, state: DrivingState, action: Any, params: DrivingParams
    ) -> tuple[jax.Array, DrivingState, jax.Array, jax.Array, dict]:
        accel, steer, lane, speed = self.controls(action, state, params)
        ego = bicycle_step(state.ego, accel, steer, params)
        moved = wrap(ego[0] - state.ego[0], params)
        ego = ego.at[0].set(ego[0] % params.road_length)
        traffic = step_traffic(state, params)
        next_state = spawn_pedestrian(
            key,
            traffic.replace(
                time=state.time + 1,
                ego=ego,
                target_lane=lane,
                target_speed=speed,
                odometer=state.odometer + moved,
            ),
            params,
        )
        obs = observe(next_state, params)
        hit, off = collided(obs, params), offroad(obs, params)
        lane_changed = ego_lane(ego[1], params) != ego_lane(state.ego[1], params)
        near = observed_pedestrian_clearance(obs, params) / params.pedestrian_safe_distance
        # time headways to the lead car and to the cars ahead and behind in the target lane
        row = jnp.clip(lane - ego_lane(ego[1], params), -1, 1) + 1
        gaps = obs[9:21].reshape(3, 4)[row]
        gap = jnp.minimum(observed_gap(obs[7]), observed_gap(jnp.minimum(gaps[0], gaps[2])))
        headway = gap / jnp.maximum(ego[3], 1.0) / params.safe_headway
        reward = (
            params.speed_weight * (1.0 - jnp.abs(ego[3] / params.speed_limit - 1.0))
            - params.pedestrian_cost * jnp.clip(1.0 - near, 0.0, 1.0)
            - params.lane_change_cost * lane_changed
            - params.headway_cost * jnp.clip(1.0 - headway, 0.0, 1.0)
            - params.collision_cost * hit
            - params.offroad_cost * off
        )
        return obs, next_state, reward.astype(jnp.float32), hit | off, {}

    def reset_env(self, key: jax.Array, params: DrivingParams) -> tuple[jax.Array, DrivingState]:
        # one draw for the lane, the jitters and the desired speeds (see spawn_pedestrian)
        u = jax.random.uniform(key, (1 + MAX_LANES + 2 * MAX_VEHICLES,))
        lane = jnp.minimum(jnp.floor(u[0] * params.num_lanes), params.num_lanes - 1)
        lane = lane.astype(jnp.int32)
        slot = jnp.arange(MAX_VEHICLES)
        count = num_cars(params)
        car_lane = slot % params.num_lanes
        # Cars of one lane sit at even spacing on the ring outside +-VEHICLE_SPAWN_GAP of
        # the ego, each jittered by up to a quarter of it and each lane shifted by up to a
        # quarter, so that no two start nearer than half the spacing.
        per_lane = (count - car_lane + params.num_lanes - 1) // params.num_lanes
        index = slot // params.num_lanes
        offset = 0.5 * u[1 : 1 + MAX_LANES] - 0.25
        jitter = 0.5 * u[1 + MAX_LANES : 1 + MAX_LANES + MAX_VEHICLES] - 0.25
        span = params.road_length - 2 * VEHICLE_SPAWN_GAP
        fraction = (index + 0.5 + jitter + offset[car_lane]) / jnp.maximum(per_lane, 1)
        car_x = (VEHICLE_SPAWN_GAP + fraction * span) % params.road_length
        spread = 2.0 * u[1 + MAX_LANES + MAX_VEHICLES :] - 1.0
        desired = params.traffic_speed + params.traffic_speed_spread * spread
        start_speed = jnp.minimum(params.traffic_speed, params.max_speed)
        state = DrivingState(
            time=0,
            ego=jnp.stack([0.0, (lane + 0.5) * params.lane_width, 0.0, start_speed]),
            target_lane=lane,
            target_speed=jnp.asarray(start_speed, jnp.float32),
            odometer=jnp.zeros(()),
            car_x=car_x,
            car_lane=car_lane,
            car_speed=desired,
            car_desired=desired,
            car_active=slot < count,
            ped_x=jnp.zeros(MAX_PEDESTRIANS),
            ped_y=jnp.zeros(MAX_PEDESTRIANS),
            ped_vy=jnp.zeros(MAX_PEDESTRIANS),
            ped_active=jnp.zeros(MAX_PEDESTRIANS, bool),
        )
        return observe(state, params), state

    def get_obs(self, state: DrivingState, params: Any = None, key: Any = None) -> jax.Array:
        return observe(state, params or self.default_params)

    def is_terminated(self, state: DrivingState, params: DrivingParams) -> jax.Array:
        obs = observe(state, params)
        return collided(obs, params) | offroad(obs, params)

    @property
    def num_actions(self) -> int:
        return 5

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(5)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (OBS_SIZE,), jnp.float32)


class DrivingContinuous(Driving):
    """(acceleration, steering) in [-1, 1]^2, times max_accel and max_steering."""

    def controls(
        self, action: Any, state: DrivingState, params: DrivingParams
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        action = jnp.clip(jnp.reshape(action, (2,)), -1.0, 1.0)
        # the meta-action targets follow the car, so that their observation stays meaningful
        return (
            action[0] * params.max_accel,
            action[1] * params.max_steering,
            ego_lane(state.ego[1], params),
            state.ego[3],
        )

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)


# ----------------------------------------------------------------- metrics and shaping


def episode_rate(events: jax.Array, valid: jax.Array) -> jax.Array:
    """Events per 1,000 steps [] of one episode: events, valid [T] (valid: its steps)."""
    return 1000.0 * jnp.sum(events & valid) / jnp.maximum(jnp.sum(valid), 1)


def collisions_per_1000_steps(obs: jax.Array, valid: jax.Array, params: DrivingParams):
    """Collisions per 1,000 steps of one episode: obs [T, OBS_SIZE] (s' of each step), valid [T]."""
    return episode_rate(collided(obs, params), valid)


def near_misses_per_1000_steps(obs: jax.Array, valid: jax.Array, params: DrivingParams):
    """Near misses per 1,000 steps of one episode: a near miss is a step at which some
    pedestrian comes within near_miss_distance where none was the step before (so a
    pedestrian passing slowly counts once)."""
    near = near_miss(obs, params)
    onset = near & ~jnp.concatenate([jnp.zeros(1, bool), near[:-1]])
    return episode_rate(onset, valid)


def mean_speed(obs: jax.Array, valid: jax.Array, params: DrivingParams) -> jax.Array:
    """The ego's mean speed (m / s) over one episode's steps."""
    return jnp.sum(jnp.where(valid, obs[:, 3], 0.0)) * SPEED_SCALE / jnp.maximum(jnp.sum(valid), 1)


def distance(obs: jax.Array, valid: jax.Array, params: DrivingParams) -> jax.Array:
    """Metres driven in one episode: sum of speed x dt over its steps (the speed after each
    step: within max_accel x dt^2 per step of the odometer's)."""
    return jnp.sum(jnp.where(valid, obs[:, 3], 0.0)) * SPEED_SCALE * params.dt


EPISODE_METRICS = {
    "collisions_per_1000_steps": ObservedMetric(collisions_per_1000_steps),
    "near_misses_per_1000_steps": ObservedMetric(near_misses_per_1000_steps),
    "mean_speed": ObservedMetric(mean_speed),
    "distance": ObservedMetric(distance),
}


def clearance(obs: jax.Array, params: DrivingParams) -> jax.Array:
    """Shaping potential [...] in [-1, 0]: minus the closeness to the lead car (bumper gap
    under 2 s x speed_limit) or to the nearest pedestrian (under
    pedestrian_safe_distance), whichever is closer."""
    gap = observed_gap(obs[..., 7])  # the lead car's (inf: none)
    car = jnp.clip(1.0 - gap / (2.0 * params.speed_limit), 0.0, 1.0)
    ped = jnp.clip(
        1.0 - observed_pedestrian_clearance(obs, params) / params.pedestrian_safe_distance, 0, 1
    )
    return -jnp.maximum(car, ped)


for _env_id, _env in {"Driving-v0": Driving, "DrivingContinuous-v0": DrivingContinuous}.items():
    register(
        EnvEntry(
            _env_id,
            _env,
            check=check_params,
            potentials={"clearance": clearance},
            episode_metrics=EPISODE_METRICS,
            ranges=RANGES,
        )
    )
