"""The zoo's reference points of a search: which networks, latency by the table and measured, the plot, the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecnn.executor import Executor
from edgecnn.kinds import kind_of
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.plan import resolve
from edgecnn.search.references import (
    ReferencePoint,
    measure_references,
    reference_arch,
    resolve_references,
    to_rows,
    train_references,
)
from edgecnn import zoo


def test_auto_picks_the_setting_and_names_are_checked():
    assert resolve_references(["auto"], 32) == ("mobilenet_v3_small_cifar@0.35", "mobilenet_v3_small_cifar@0.5",
                                                "mobilenet_v3_small_cifar@0.75", "mobilenet_v3_small_cifar@1.0")
    assert resolve_references(["auto"], 224) == ("mobilenet_v3_small", "mobilenet_v3_large")
    assert resolve_references(["auto"], 16) == () and resolve_references(["none"], 32) == ()
    assert resolve_references(["resnet20_cifar", "resnet20_cifar"], 32) == ("resnet20_cifar",)
    with pytest.raises(ValueError, match="not a mix"):
        resolve_references(["auto", "resnet20_cifar"], 32)
    with pytest.raises(ValueError, match="unknown model"):
        resolve_references(["mobilenet_v9"], 32)
    with pytest.raises(ValueError, match="must be a number"):
        resolve_references(["mobilenet_v3_small_cifar@x"], 32)
    assert reference_arch("mobilenet_v3_small_cifar@0.5") == zoo.arch_of("mobilenet_v3_small_cifar", width=0.5)


def test_references_get_the_tables_latency_and_a_measured_one():
    refs = ("mobilenet_v3_small_cifar@0.35", "mobilenet_v3_small_cifar@0.5")
    table = LatencyTable(fingerprint(backend="eager", threads=1))
    want = {}
    for ref in refs:  # 1 µs per 1,000 MACs per block, 0.02 ms overhead: the predicted latency by hand
        total = 0.02
        for p in resolve(reference_arch(ref), num_classes=10, in_chans=1, input_size=(16, 16)):
            ms = kind_of(p.spec.kind).cost(p)[1] * 1e-6
            table.entries[block_key(p)] = TableEntry(ms, ms, ms, ms, 1)
            total += ms
        want[ref] = total
    table.entries[overhead_key(in_chans=1, input_size=(16, 16), batch=1, num_classes=10)] = TableEntry(
        0.02, 0.02, 0.02, 0.02, 1)  # fmt: skip
    timing = TimingConfig(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.2, retries=0)
    with Executor("serial") as ex:
        points = measure_references(refs, LatencyModel(table), ex, input_size=16, num_classes=10, in_chans=1,
                                    backend="eager", threads=1, timing=timing)  # fmt: skip
    assert [p.label for p in points] == list(refs)
    for p in points:
        assert p.table_ms == pytest.approx(want[p.label])
        assert p.measured_ms > 0 and p.measured_iqr_ms >= 0 and p.top1 is None and p.what.startswith("untrained")
    # training goes through the search's own final recipe, one folder per reference
    seen = []

    def recipe(arch, folder):
        seen.append((arch, folder.name))
        return {"top1": 0.5 + len(seen) / 10, "epochs": 3, "seconds": 1.5, "checkpoint": str(folder / "last.pt")}

    trained = train_references(points, recipe, Path("refs"))  # recipe writes nothing
    assert seen == [(reference_arch(r), f"mobilenet_v3_small_cifar-w{r.rpartition('@')[2]}") for r in refs]
    assert [t.top1 for t in trained] == [0.6, 0.7] and trained[0].what == "trained 3 epochs, final recipe"
    assert [(t.table_ms, t.measured_ms) for t in trained] == [(p.table_ms, p.measured_ms) for p in points]
    rows = to_rows(trained)
    assert rows[1]["label"] == refs[1] and rows[1]["top1"] == 0.7 and rows[1]["what"].startswith("trained")


def _search_doc(references):
    hist = [{"index": i, "arch": f"a{i}", "lat_ms": lat, "acc": acc, "generation": i // 2}
            for i, (lat, acc) in enumerate([(1.0, 0.80), (1.5, 0.85), (1.2, 0.78), (2.0, 0.90)])]  # fmt: skip
    return {"kind": "search", "schema": 1, "space": {"name": "mbv3-32", "input_size": 32},
            "objective": {"target_ms": 1.6, "formula": "ACC·(LAT/1.6)^-0.07"}, "search": {"algorithm": "evolution"},
            "estimator": "supernet", "latency": {"backend": "eager", "threads": 1}, "history": hist,
            "front": [0, 1, 3],
            "finalists": [{"arch": "a1", "acc": 0.85, "table_ms": 1.5, "measured_ms": 1.55, "measured_iqr_ms": 0.01,
                           "score": 0.8, "measured_score": 0.84}],
            "final": {"arch": "a1", "epochs": 3, "top1": 0.88, "measured_ms": 1.55},
            "references": references}  # fmt: skip


def test_search_plot_and_report_label_the_references():
    pytest.importorskip("matplotlib")
    from edgecnn import plots
    from edgecnn.report import render_html

    refs = to_rows([
        ReferencePoint("mobilenet_v3_small_cifar@0.5", "x", 1.1, 1.2, 0.01, 0.83, 3, 2.0, None),
        ReferencePoint("mobilenet_v3_small_cifar@0.35", "x", 0.9, 0.95, 0.01, 0.79, 3, 2.0, None),
        ReferencePoint("mobilenet_v3_small_cifar@1.0", "x", 1.9, 2.1, 0.01, None),
    ])  # fmt: skip
    doc = _search_doc(refs)
    ax = plots.plot_search_run(doc).axes[0]
    (family,) = [l for l in ax.lines if "zoo, same training" in str(l.get_label())]
    # the trained references in latency order, at their measured latency and test top-1
    assert list(family.get_xdata()) == [0.95, 1.2] and list(family.get_ydata()) == pytest.approx([79.0, 83.0])
    texts = [t.get_text() for t in ax.texts]
    assert "×0.35" in texts and "×0.5" in texts and "mobilenet_v3_small_cifar@1.0 (untrained)" in texts
    untrained = [l for l in ax.lines if list(l.get_xdata()) == [2.1, 2.1]]
    assert len(untrained) == 1  # a dotted line at its measured latency
    html = render_html(doc)
    assert html.count('<img src="data:image/png;base64,') == 1 and "<h2>Architecture search</h2>" in html
    assert ('<td class="l">mobilenet_v3_small_cifar@0.5</td><td>1.100</td><td>1.200</td><td>83.00%</td>'
            "<td>trained 3 epochs, final recipe</td>") in html  # fmt: skip
    assert "<td>2.100</td><td>–</td><td>untrained: latency only</td>" in html
    assert "Chosen network trained 3 epochs: test top-1 88.00% at 1.550 ms measured." in html


def test_old_search_documents_with_untrained_acc_none_still_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from edgecnn.search.plot import plot_search

    old = [{"label": "mobilenet_v3_small_cifar@0.5", "arch": "x", "measured_ms": 1.3, "acc": None, "what": "untrained"}]
    path = plot_search(_search_doc(old), tmp_path / "p.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")
