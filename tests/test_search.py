"""The (w, γ) search strategies on analytic FID surfaces, and their replay from evaluated points."""
import numpy as np
import pytest

from neon_steps import search

W_DENSE = tuple(round(-1 + 0.01 * i, 3) for i in range(201))  # 201 points
GAMMAS = (1.0, 1.25, 1.5, 1.75, 2.0)


def bowl(w, g):
    """Unimodal, quadratic near its minimum (w* = 0.37, γ* = 1.6), steeper far away."""
    d = np.array([w - 0.37, g - 1.6])
    q = 5 * d[0] ** 2 + 3 * d[1] ** 2 + 2 * d[0] * d[1]
    return float(10 + q + 2 * q ** 2)


def noisy(f, sd, seed=0):
    """f plus noise that depends on the point only, as FID at common random numbers does."""
    def g(w, gamma):
        rng = np.random.default_rng([seed, int(round(w * 1000)) + 5000, int(round(gamma * 1000))])
        return f(w, gamma) + sd * rng.standard_normal()
    return g


def grid_optimum(f, w_grid, gammas):
    return min(f(w, g) for w in w_grid for g in gammas)


@pytest.mark.parametrize("mode", ["brent", "quadratic"])
@pytest.mark.parametrize("gammas", [(1.0,), GAMMAS], ids=["w", "w-gamma"])
def test_brent_and_quadratic_reach_the_grid_optimum_with_a_tenth_of_its_evaluations(mode, gammas):
    f = bowl if len(gammas) > 1 else (lambda w, g: bowl(w, 1.6))
    step, _ = search.run(search.Settings(mode=mode, w_grid=W_DENSE, gammas=gammas), f)
    assert step.done
    grid_evals = len(W_DENSE) * len(gammas)
    assert len(step.asked) <= 0.1 * grid_evals
    assert step.asked[step.best] <= 1.02 * grid_optimum(f, W_DENSE, gammas)


def test_quadratic_starts_from_at_least_six_points_in_two_dimensions():
    settings = search.Settings(mode="quadratic", w_grid=W_DENSE, gammas=GAMMAS)
    first = search.next_points(settings, {})
    assert not first.done and len(first.next) >= 6
    ws, gs = zip(*first.next)
    assert min(ws) == -1 and max(ws) == 1 and min(gs) == 1 and max(gs) == 2


def test_grid_asks_for_every_point_once():
    settings = search.Settings(mode="grid", w_grid=(-0.5, 0.0, 0.5), gammas=(1.0, 2.0))
    step, rounds = search.run(settings, bowl)
    assert len(rounds) == 1 and len(rounds[0]) == 6
    assert step.best == (0.5, 2.0)


def test_greedy_walks_w_up_and_stops_once_fid_rises():
    w_grid = tuple(round(-1 + 0.1 * i, 3) for i in range(21))
    settings = search.Settings(mode="greedy", w_grid=w_grid, gammas=(1.0, 1.5, 2.0), refine_w=0.05,
                               refine_gamma=0.25, max_evals=100)
    step, rounds = search.run(settings, bowl)
    asked_w = sorted({w for w, _ in step.asked})
    assert max(asked_w) < 0.8          # the walk stopped after the bowl's bottom (w* = 0.37)
    assert step.best[0] in (0.35, 0.4)
    assert all(len(r) == 1 for r in rounds[:-1])  # one point at a time, the refinement at the end


def test_replaying_the_evaluated_points_asks_nothing_evaluated_twice():
    """A search stopped after any round and restarted from its evaluated points continues where
    it was, and no point is asked for twice over the whole search."""
    for mode in ["greedy", "brent", "quadratic"]:
        settings = search.Settings(mode=mode, w_grid=tuple(round(-1 + 0.1 * i, 3) for i in range(21)),
                                   gammas=(1.0, 2.0), max_evals=60)
        f = noisy(bowl, 0.01)
        _, rounds = search.run(settings, f)
        asked = [p for r in rounds for p in r]
        assert len(asked) == len(set(asked)), mode
        evaluated = {}
        for r in rounds:  # a restart after each round asks exactly the next round again
            assert search.next_points(settings, evaluated).next == r
            evaluated.update({p: f(*p) for p in r})
        assert search.next_points(settings, evaluated).done


def test_noise_stops_the_search_earlier_and_near_the_optimum():
    f = noisy(lambda w, g: bowl(w, 1.6), 0.05)
    settings = search.Settings(mode="brent", w_grid=W_DENSE, gammas=(1.0,), xtol=0.001)
    quiet, _ = search.run(settings, f)
    aware, _ = search.run(settings, f, noise=0.05)
    assert len(aware.asked) < len(quiet.asked)
    assert bowl(aware.best[0], 1.6) <= 1.02 * bowl(0.37, 1.6)
    q_aware, _ = search.run(search.Settings(mode="quadratic", w_grid=W_DENSE, gammas=GAMMAS), noisy(bowl, 0.05),
                            noise=0.05)
    assert bowl(*q_aware.best) <= 1.02 * bowl(0.37, 1.6)


def test_the_budget_ends_a_search():
    settings = search.Settings(mode="brent", w_grid=W_DENSE, gammas=GAMMAS, max_evals=8, xtol=1e-3)
    step, _ = search.run(settings, bowl)
    assert step.done and step.reason == "max_evals" and len(step.asked) <= 8 + len(GAMMAS)


def test_points_are_rounded_so_modes_share_them():
    settings = search.Settings(mode="brent", w_grid=W_DENSE, gammas=(1.0,))
    (w, g), = search.next_points(settings, {}).next
    assert w == round(w, 3) and g == 1.0


def test_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="search.mode: 'newton'"):
        search.next_points(search.Settings(mode="newton", w_grid=(0.0,), gammas=(1.0,)), {})
