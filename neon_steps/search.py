"""Searching (w, γ) for the lowest FID with few evaluations: grid, greedy, brent, quadratic.

Every strategy is stateless: `next_points(settings, evaluated, noise)` replays the strategy from
scratch against the FIDs evaluated so far and returns the points it needs next, or that it is
done and which point it chose. Replaying from the evaluated points (instead of keeping an
optimizer's state) is what lets a Snakemake checkpoint run one round per job, and a killed search
resume without evaluating any point twice: the same FIDs give the same questions.

A strategy asks through an `Oracle`; asking for a point not evaluated yet raises `Need`, which
ends the replay. Points are rounded to `decimals` digits, so a file name is stable and a point
asked by two modes is one evaluation.

Torch-free: the Snakefile and the search rounds import it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from neon_steps.errors import ConfigError

Point = tuple  # (w, gamma)
MODES = ("grid", "greedy", "brent", "quadratic")


@dataclass(frozen=True)
class Settings:
    mode: str
    w_grid: tuple          # grid/greedy walk these; brent/quadratic search [min, max]
    gammas: tuple
    tol: float = 0.0       # FID differences below this (or below the noise) are not worth chasing
    xtol: float = 0.02     # brent/quadratic: no finer steps in w than this
    max_evals: int = 30    # evaluations of one search (one (model, S, B)) at most
    refine_w: float = 0.1  # greedy: the ± refinement around the best point
    refine_gamma: float = 0.0
    decimals: int = 3

    @property
    def w_bounds(self) -> tuple[float, float]:
        return min(self.w_grid), max(self.w_grid)

    @property
    def gamma_bounds(self) -> tuple[float, float]:
        return min(self.gammas), max(self.gammas)


def settings_from(search: Mapping, w_grid: Sequence[float], gammas: Sequence[float]) -> Settings:
    """Settings from a model's `evaluate.search` section and its w and γ grids."""
    keys = {"tol", "xtol", "max_evals", "refine_w", "refine_gamma", "decimals"}
    return Settings(mode=search.get("mode", "grid"), w_grid=tuple(sorted(w_grid)), gammas=tuple(sorted(gammas)),
                    **{k: v for k, v in search.items() if k in keys})


class Need(Exception):
    """The replay reached points that are not evaluated yet."""

    def __init__(self, points: list):
        super().__init__(points)
        self.points = points


class Budget(Exception):
    """The search spent `max_evals`."""


class Oracle:
    """FID by point, from the evaluated points; remembers what the strategy asked."""

    def __init__(self, evaluated: Mapping[Point, float], decimals: int, max_evals: int):
        self.decimals = decimals
        self.known = {self.key(*p): float(f) for p, f in evaluated.items()}
        self.max_evals = max_evals
        self.asked: dict[Point, float] = {}

    def key(self, w: float, gamma: float) -> Point:
        return round(float(w), self.decimals) + 0.0, round(float(gamma), self.decimals) + 0.0

    def many(self, points: Sequence[Point]) -> list[float]:
        keys = list(dict.fromkeys(self.key(*p) for p in points))
        missing = [k for k in keys if k not in self.known]
        if missing:
            if len(self.asked) >= self.max_evals:
                raise Budget()
            raise Need(missing)
        for k in keys:
            self.asked[k] = self.known[k]
        return [self.known[self.key(*p)] for p in points]

    def __call__(self, w: float, gamma: float) -> float:
        return self.many([(w, gamma)])[0]

    def best(self) -> Point | None:
        return min(self.asked, key=lambda k: (self.asked[k], k)) if self.asked else None


@dataclass
class Step:
    """What a replay found: the points to evaluate next, or done with the chosen point."""
    next: list = field(default_factory=list)
    done: bool = False
    best: Point | None = None
    asked: dict = field(default_factory=dict)  # the points the strategy used, with their FIDs
    reason: str = ""


def next_points(settings: Settings, evaluated: Mapping[Point, float], noise: float = 0.0) -> Step:
    """Replay `settings.mode` against `evaluated` ({(w, γ): fid}); `noise` is the FID's standard
    deviation between draws at the search's sample count (0 when unknown)."""
    if settings.mode not in MODES:
        raise ConfigError(f"search.mode: {settings.mode!r} is not one of {', '.join(MODES)}")
    oracle = Oracle(evaluated, settings.decimals, settings.max_evals)
    tol = max(settings.tol, noise if math.isfinite(noise) else 0.0)
    strategy = STRATEGIES[settings.mode]
    try:
        reason = strategy(oracle, settings, tol) or "converged"
    except Need as need:
        return Step(next=need.points, best=oracle.best(), asked=dict(oracle.asked))
    except Budget:
        reason = "max_evals"
    return Step(done=True, best=oracle.best(), asked=dict(oracle.asked), reason=reason)


# -- strategies ---------------------------------------------------------------------------------

def grid(oracle: Oracle, s: Settings, tol: float) -> str:
    oracle.many([(w, g) for g in s.gammas for w in s.w_grid])
    return "grid"


def greedy(oracle: Oracle, s: Settings, tol: float) -> str:
    """The authors' walk: w ascending over its grid and, for each w, γ ascending; each loop
    stops once FID rises more than `tol` above its best so far; then one ± refinement around the
    best point."""
    best = math.inf
    for w in s.w_grid:
        best_w = math.inf
        for g in s.gammas:
            fid = oracle(w, g)
            best_w = min(best_w, fid)
            if fid > best_w + tol:
                break
        if best_w > best + tol:
            break
        best = min(best, best_w)
    w0, g0 = oracle.best()
    (w_lo, w_hi), (g_lo, g_hi) = s.w_bounds, s.gamma_bounds
    around = [(w0 - s.refine_w, g0), (w0 + s.refine_w, g0)]
    if s.refine_gamma > 0:
        around += [(w0, g0 - s.refine_gamma), (w0, g0 + s.refine_gamma)]
    oracle.many([(w, g) for w, g in around if w_lo <= w <= w_hi and g_lo <= g <= g_hi])
    return "refined"


class _Settled(Exception):
    pass


def brent(oracle: Oracle, s: Settings, tol: float) -> str:
    """For each γ, w by Brent's method on [w_min, w_max] (scipy's bounded minimize_scalar);
    the γ lines are independent, so their next points are asked together. A line stops when
    its three lowest FIDs are within `tol` of each other: the bowl's bottom is under the noise."""
    from scipy.optimize import minimize_scalar

    needed = []
    for g in s.gammas:
        seen: list[float] = []

        def fid(w: float) -> float:
            if len(seen) >= 3 and tol > 0 and np.ptp(sorted(seen)[:3]) < tol:
                raise _Settled()
            seen.append(oracle(w, g))
            return seen[-1]

        try:
            minimize_scalar(fid, bounds=s.w_bounds, method="bounded",
                            options={"xatol": s.xtol, "maxiter": s.max_evals})
        except _Settled:
            pass
        except Need as need:
            needed += need.points
    if needed:
        raise Need(needed)
    return "converged"


def _design(dims: int) -> list[tuple[float, ...]]:
    """The initial design in the unit box: 1-D five points; 2-D a hexagon and its centre
    (seven points, enough for the six coefficients of a 2-D quadratic with one to spare)."""
    if dims == 1:
        return [(u,) for u in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    return [(0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (-0.5, -1.0), (0.5, -1.0), (-0.5, 1.0), (0.5, 1.0)]


def _terms(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 1:
        u = x[:, 0]
        return np.stack([np.ones_like(u), u, u * u], 1)
    u, v = x[:, 0], x[:, 1]
    return np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], 1)


def quadratic(oracle: Oracle, s: Settings, tol: float) -> str:
    """Fit a quadratic to FID over (w, γ) (w alone with one γ) near the best point, evaluate its
    minimum inside a trust region around that point, and repeat; stop (after at least one fitted
    point) when the predicted gain is below `tol`, the trust region is smaller than `xtol`, or
    `max_evals` is spent."""
    from scipy.optimize import minimize

    (w_lo, w_hi), (g_lo, g_hi) = s.w_bounds, s.gamma_bounds
    dims = 1 if g_hi == g_lo else 2
    centre = np.array([(w_lo + w_hi) / 2, (g_lo + g_hi) / 2])[:dims]
    half = np.array([(w_hi - w_lo) / 2, (g_hi - g_lo) / 2])[:dims]

    def point(x: np.ndarray) -> Point:
        real = centre + half * np.clip(x, -1, 1)
        return (float(real[0]), float(real[1]) if dims == 2 else g_lo)

    def unit(p: Point) -> np.ndarray:
        return (np.array(p[:dims]) - centre) / half

    oracle.many([point(np.array(x)) for x in _design(dims)])
    radius = 1.0  # the trust region, in units of the box's half-width
    xtol = s.xtol / half[0]
    while True:
        xs = np.array([unit(p) for p in oracle.asked])
        fs = np.array(list(oracle.asked.values()))
        best = xs[np.argmin(fs)]
        # fit on the points near the best one: the bowl is quadratic locally, not over the box
        dist = np.abs(xs - best).max(1)
        near = np.argsort(dist, kind="stable")[:max(_terms(xs).shape[1] + 1, int(np.sum(dist <= 2 * radius)))]
        coef, *_ = np.linalg.lstsq(_terms(xs[near]), fs[near], rcond=None)
        lo, hi = np.maximum(best - radius, -1), np.minimum(best + radius, 1)
        found = minimize(lambda x: float(_terms(x[None])[0] @ coef), best, method="L-BFGS-B",
                         bounds=list(zip(lo, hi)))
        # the fit's own predicted decrease from the best point (least squares need not pass
        # through it, so the observed best FID would understate or overstate the gain)
        gain = float(_terms(best[None])[0] @ coef - found.fun)
        # the design alone fits the whole box, which is rarely a bowl: its optimum is always tried
        if gain < max(tol, 1e-12) and (len(oracle.asked) > len(_design(dims)) or gain < 1e-12):
            return "predicted gain below tolerance"
        candidate = oracle.key(*point(found.x))
        if candidate in oracle.asked:
            radius /= 2
        else:
            fid = oracle(*candidate)
            if fid >= fs.min():
                radius /= 2
        if radius < xtol:
            return "trust region below xtol"


STRATEGIES: dict[str, Callable[[Oracle, Settings, float], str]] = {
    "grid": grid, "greedy": greedy, "brent": brent, "quadratic": quadratic}


def run(settings: Settings, fid: Callable[[float, float], float], noise: float = 0.0,
        max_rounds: int = 1000) -> tuple[Step, list[list[Point]]]:
    """Drive a search to the end against a function (benchmarks, tests): the final step and the
    points of each round, in order."""
    evaluated: dict[Point, float] = {}
    rounds = []
    for _ in range(max_rounds):
        step = next_points(settings, evaluated, noise)
        if step.done:
            return step, rounds
        rounds.append(step.next)
        evaluated.update({p: fid(*p) for p in step.next})
    return next_points(settings, evaluated, noise), rounds
