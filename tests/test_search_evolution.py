import json
import math
import random
import statistics

import pytest
from search_helpers import TINY_SPACE, all_genomes, synthetic_table

from edgecnn.latency.model import LatencyModel
from edgecnn.search.evolution import SearchConfig, SearchState, run_search
from edgecnn.search.objective import Objective
from edgecnn.search.space import GENES, MBV3_32_SPACE

TARGET = MBV3_32_SPACE.sample_genome(random.Random(123))


def synthetic_acc(arch: str) -> float:
    """Known optimum: 1.0 at TARGET; each gene that differs costs 0.03."""
    g = MBV3_32_SPACE.decode(arch)
    return 1.0 - 0.03 * sum(getattr(a, n) != getattr(b, n) for a, b in zip(g, TARGET) for n in GENES)


def evaluate(archs):
    return [synthetic_acc(a) for a in archs]


def test_evolution_beats_random_search_at_equal_budget():
    flat = Objective(1.0, w=0.0)  # score = accuracy
    best = {}
    for algorithm in ("evolution", "random"):
        best[algorithm] = [
            run_search(MBV3_32_SPACE, evaluate, lambda a: 1.0, flat,
                       SearchConfig(algorithm, budget=200, population=20, sample_size=5, seed=seed)).best[0].score
            for seed in range(5)
        ]  # fmt: skip
    # 24 genes with 3 (or 2) values: a uniform draw misses ~15 of them, the best of 200 draws ~8
    assert all(e > r for e, r in zip(best["evolution"], best["random"]))
    assert statistics.mean(best["evolution"]) >= statistics.mean(best["random"]) + 0.09


def test_history_counts_and_regularized_population():
    flat = Objective(1.0, w=0.0)
    res = run_search(MBV3_32_SPACE, evaluate, lambda a: 1.0, flat,
                     SearchConfig("evolution", budget=30, population=10, sample_size=3, batch=4, seed=1))  # fmt: skip
    assert len(res.history) == 30 and [c.index for c in res.history] == list(range(30))
    assert all(c.parent is None for c in res.history[:10]) and all(c.parent is not None for c in res.history[10:])
    assert all(c.parent < c.index for c in res.history[10:])
    curve = res.best_score_curve()
    assert curve == sorted(curve) and curve[-1] == res.best[0].score


def test_hard_constraint_every_candidate_meets_the_target_by_the_table():
    table = synthetic_table(TINY_SPACE, num_classes=10, in_chans=1)
    model = LatencyModel(table)  # measure=False: a missing block would raise

    def latency(arch: str) -> float:
        return model.predict(arch, input_size=16, num_classes=10, in_chans=1).total_ms

    lats = sorted(latency(TINY_SPACE.arch(g).format()) for g in all_genomes(TINY_SPACE))
    target = lats[len(lats) // 4]  # a quarter of the space fits
    obj = Objective(target, hard=True)
    rng_acc = {}

    def acc(archs):  # bigger networks are more accurate: the constraint binds
        return [rng_acc.setdefault(a, latency(a) / lats[-1]) for a in archs]

    for algorithm in ("evolution", "random"):
        res = run_search(TINY_SPACE, acc, latency, obj,
                         SearchConfig(algorithm, budget=40, population=10, sample_size=4, batch=3, seed=2))  # fmt: skip
        assert len(res.history) == 40
        assert all(c.lat_ms <= target for c in res.history)
        assert all(c.lat_ms <= target and c.score > float("-inf") for c in res.best + res.front)
        assert model.counts["interpolated"] == model.counts["measured"] == 0  # every latency came from the table
    with pytest.raises(ValueError, match="no network of 1000 random draws meets"):
        run_search(TINY_SPACE, acc, latency, Objective(lats[0] / 2, hard=True), SearchConfig("random", budget=2))


class Crash(Exception):
    pass


def crashing_on_call(n, evaluate):
    """``evaluate`` that raises Crash on its n-th call (a kill while that batch is evaluated)."""
    calls = {"n": 0}

    def crashing(archs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash
        return evaluate(archs)

    return crashing


@pytest.mark.parametrize("algorithm", ["evolution", "random"])
def test_resume_after_a_crash_gives_the_identical_history(tmp_path, algorithm):
    obj = Objective(2.0, w=-0.07)

    def latency(arch: str) -> float:
        g = MBV3_32_SPACE.decode(arch)
        return 0.5 + sum(c.depth * c.width * c.expansion * c.kernel for c in g) / 4000

    cfg = SearchConfig(algorithm, budget=25, population=8, sample_size=3, batch=3, seed=4)
    whole = run_search(MBV3_32_SPACE, evaluate, latency, obj, cfg, state_path=tmp_path / "whole.json")

    crashing = crashing_on_call(5, evaluate)
    state = tmp_path / "part.json"
    with pytest.raises(Crash):
        run_search(MBV3_32_SPACE, crashing, latency, obj, cfg, state_path=state)
    saved = SearchState.load(state)
    # four batches were saved before the fifth crashed: 3+3+3+3, or 3+3+2+3 when evolution fills its population of 8
    saved_n = {"evolution": 11, "random": 12}[algorithm]
    assert len(saved.history) == saved_n
    resumed = run_search(MBV3_32_SPACE, evaluate, latency, obj, cfg, state_path=state, resume=True)
    assert resumed.resumed_from == saved_n
    assert resumed.history == whole.history
    assert json.loads(state.read_text()) == json.loads((tmp_path / "whole.json").read_text())
    with pytest.raises(ValueError, match="other settings"):
        run_search(MBV3_32_SPACE, evaluate, latency, obj, SearchConfig(algorithm, budget=26, population=8,
                   sample_size=3, batch=3, seed=4), state_path=state, resume=True)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_search(MBV3_32_SPACE, evaluate, latency, obj, cfg, state_path=tmp_path / "none.json", resume=True)


def test_proxy_scored_search_resumes_and_refuses_another_estimate(tmp_path):
    # a zero-cost proxy scores on its own scale (NASWOT ~700, or -inf for a degenerate network): the state must
    # read back (a resumed proxy search failed with "an accuracy in [0, 1]"), and only under the same estimate
    hard = Objective(2.0, hard=True)

    def latency(arch: str) -> float:
        return 1.0 + sum(c.depth * c.width for c in MBV3_32_SPACE.decode(arch)) / 1000

    def proxy(archs):  # unbounded; -inf (a singular kernel matrix) for the networks whose first stage is 16 wide
        return [-math.inf if MBV3_32_SPACE.decode(a)[0].width == 16 else 700.0 + 100 * synthetic_acc(a)
                for a in archs]  # fmt: skip

    cfg = SearchConfig("evolution", budget=12, population=4, sample_size=2, batch=3, seed=1)
    whole = run_search(MBV3_32_SPACE, proxy, latency, hard, cfg, state_path=tmp_path / "w.json",
                       estimate="proxy-naswot")  # fmt: skip
    assert json.loads((tmp_path / "w.json").read_text())["estimate"] == "proxy-naswot"
    assert any(c.acc > 1 for c in whole.history) and any(c.acc == -math.inf for c in whole.history)
    crashing = crashing_on_call(3, proxy)
    with pytest.raises(Crash):
        run_search(MBV3_32_SPACE, crashing, latency, hard, cfg, state_path=tmp_path / "p.json",
                   estimate="proxy-naswot")  # fmt: skip
    resumed = run_search(MBV3_32_SPACE, proxy, latency, hard, cfg, state_path=tmp_path / "p.json", resume=True,
                         estimate="proxy-naswot")  # fmt: skip
    assert resumed.resumed_from == 4 and resumed.history == whole.history  # 3, then 1 to fill the population
    with pytest.raises(ValueError, match="estimated by 'proxy-naswot', not 'accuracy'"):
        run_search(MBV3_32_SPACE, proxy, latency, hard, cfg, state_path=tmp_path / "p.json", resume=True)
    # an accuracy search's state still holds accuracies only
    state = json.loads((tmp_path / "w.json").read_text())
    del state["estimate"]
    with pytest.raises(ValueError, match=r"history\[0\]\.acc. must be (an accuracy in \[0, 1\]|a finite number)"):
        SearchState.from_dict(state, source="s.json")
    state["estimate"] = "proxy-naswot"
    state["history"][0]["acc"] = float("nan")
    with pytest.raises(ValueError, match=r"history\[0\]\.acc.*proxy-naswot score"):
        SearchState.from_dict(state, source="s.json")


def test_bad_config():
    with pytest.raises(ValueError, match="unknown search algorithm 'annealing'"):
        SearchConfig("annealing")
    with pytest.raises(ValueError, match="sample_size"):
        SearchConfig(population=5, sample_size=6)
    with pytest.raises(ValueError, match="budget must be a positive"):
        SearchConfig(budget=0)


def test_a_search_strategy_is_one_record(monkeypatch, tmp_path):
    """A new strategy is one entry in STRATEGIES: a hill climber (always mutate the best so far) runs, resumes and
    is checked like the built-in ones, without touching any other code."""
    import edgecnn.search.evolution as ev

    def hill_children(breeder, state, n):
        if not state.history:
            return [breeder.random() for _ in range(n)]
        best = max(state.history, key=lambda c: (c.score, -c.index))
        state_view = SearchState(state.config, state.objective, state.space, state.history, [best.index])
        return [breeder.mutant(state_view) for _ in range(n)]

    monkeypatch.setitem(ev.STRATEGIES, "hill", ev.Strategy("hill", False, True, hill_children, "test"))
    flat = Objective(1.0, w=0.0)
    cfg = SearchConfig("hill", budget=40, population=5, sample_size=1, batch=4, seed=0)
    res = run_search(MBV3_32_SPACE, evaluate, lambda a: 1.0, flat, cfg, state_path=tmp_path / "s.json")
    assert len(res.history) == 40 and all(c.parent is not None for c in res.history[4:])
    assert res.best[0].score > max(c.score for c in res.history[:4])  # climbing beat its random start
    back = SearchState.load(tmp_path / "s.json", space=MBV3_32_SPACE)  # the state checks read the record too
    assert back.population == [] and len(back.history) == 40
    assert [s for s in ev.STRATEGIES if s != "hill"] == list(ev.ALGORITHMS) == ["evolution", "evolution-novel",
                                                                                  "random"]  # fmt: skip


def test_novel_evolution_never_evaluates_a_network_twice_where_plain_evolution_does(tmp_path):
    """evolution-novel: regularized evolution whose children are all new networks — on a small space, where plain
    evolution re-proposes networks it has evaluated, every one of its 60 candidates is distinct; it keeps the
    population and parents of plain evolution, and resumes to the same history."""
    flat = Objective(1.0, w=0.0)
    table = synthetic_table(TINY_SPACE, num_classes=10, in_chans=1)
    model = LatencyModel(table)

    def acc(archs):
        return [model.predict(a, input_size=16, num_classes=10, in_chans=1).total_ms for a in archs]

    size = len(list(all_genomes(TINY_SPACE)))
    cfg = dict(budget=60, population=8, sample_size=4, batch=3, seed=4)
    assert size > 60
    plain = run_search(TINY_SPACE, acc, lambda a: 1.0, flat, SearchConfig("evolution", **cfg))
    assert len({c.arch for c in plain.history}) < 60  # plain evolution repeats itself here
    path = tmp_path / "novel.json"
    novel = run_search(TINY_SPACE, acc, lambda a: 1.0, flat, SearchConfig("evolution-novel", **cfg), state_path=path)
    assert len(novel.history) == 60 and len({c.arch for c in novel.history}) == 60
    assert all(c.parent is None for c in novel.history[:8]) and all(c.parent is not None for c in novel.history[8:])
    back = SearchState.load(path, space=TINY_SPACE)
    assert back.population == [c.index for c in novel.history[-8:]]  # the newest P: regularized (ageing)


def test_novel_draws_that_only_find_evaluated_networks_say_so():
    """When every random draw is a network evaluated already (a space nearly used up), the error says that —
    not that no network meets the latency target."""
    import edgecnn.search.evolution as ev

    genome = TINY_SPACE.sample_genome(random.Random(0))
    arch = TINY_SPACE.arch(genome).format()
    space = type("OneNetwork", (), {"name": "one", "sample_genome": lambda self, rng: genome,
                                    "arch": lambda self, g: TINY_SPACE.arch(g)})()  # fmt: skip
    breeder = ev._Breeder(space, lambda a: 1.0, Objective(2.0, hard=True), SearchConfig("evolution-novel", max_tries=5),
                          random.Random(0))  # fmt: skip
    assert breeder.random() == (arch, 1.0, None)
    with pytest.raises(ValueError, match="all 5 random draws were networks evaluated already: space 'one'"):
        breeder.random(avoid={arch})
