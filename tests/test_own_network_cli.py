"""A network of the user's own code through the CLI: ``--model MODULE:FN[:key=value,...]`` on analyze, train,
explain, export and latency; the constructor recorded in the checkpoint (round trip without ``--model``); the
reference parser; key-by-key weight mismatches; the BatchNorm check after fine-tuning."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.checkpoint import load_checkpoint, save_checkpoint
from edgecnn.cli.main import main
from edgecnn.cli.user_model import ModelRef, build_ref, load_any, load_into, parse_model_ref
from edgecnn.run_document import read_results
from edgecnn.train import TrainConfig, check_bn, evaluate, finetune_model
from edgecnn.train.task import DataRef, worker_data

NET = """
import torch
from torch import nn


class SlowBN(nn.Module):
    '''conv-BN-ReLU twice, GAP, linear; BN momentum 0.01 as torchvision's MobileNetV3 has it.'''

    def __init__(self, num_classes=10, width=16, in_chans=1):
        super().__init__()

        def cbr(cin, cout, stride=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                 nn.BatchNorm2d(cout, momentum=0.01), nn.ReLU())

        self.features = nn.Sequential(cbr(in_chans, width), cbr(width, 2 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build(num_classes=10, width=16, stale=False):
    '''stale: running statistics of other data (mean 3, variance 25), as a pretrained network brings them.'''
    net = SlowBN(num_classes, width)
    if stale:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(25.0)
    return net
"""
PKG = "edgecnn_test_ownnet"  # the same code, importable by name
TRAIN = ["--data", "digits", "--image-size", "8", "--epochs", "1", "--batch-size", "64", "--threads", "1",
         "--no-progress"]  # fmt: skip
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``slow_bn.py`` in a folder that is also on ``sys.path`` as module :data:`PKG`."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "slow_bn.py").write_text(textwrap.dedent(NET))
    (folder / f"{PKG}.py").write_text(textwrap.dedent(NET))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield folder / "slow_bn.py"
        sys.modules.pop(PKG, None)


@pytest.fixture(scope="module")
def trained(code: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edgecnn train --model slow_bn.py:build:stale=True`` (a path relative to the code's folder) for one epoch:
    its run folder."""
    out = tmp_path_factory.mktemp("run") / "t"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(code.parent)
        assert main(["train", "--model", "slow_bn.py:build:stale=True", *TRAIN, "--out", str(out)]) == 0
    return out


def _macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    with FlopCounterMode(display=False) as fc:
        model.eval()(torch.zeros(1, *shape))
    return fc.get_total_flops() // 2


# ------------------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("spec,target,kwargs", [
    ("my_net.py:build", "my_net.py:build", {}),
    ("torchvision.models:mobilenet_v3_small:num_classes=10", "torchvision.models:mobilenet_v3_small",
     {"num_classes": 10}),
    ("my_net.py:build:width_mult=0.5,num_classes=10", "my_net.py:build", {"width_mult": 0.5, "num_classes": 10}),
    ("/a:b/net.py:Net:act=relu,bias=False,norm=None,k=(3, 3),name='x, y',lr=1e-3,ok=true",
     "/a:b/net.py:Net", {"act": "relu", "bias": False, "norm": None, "k": (3, 3), "name": "x, y", "lr": 1e-3,
                         "ok": True}),
    ("pkg.sub:make:sizes=[16, 32],opts={'a': -1}", "pkg.sub:make", {"sizes": [16, 32], "opts": {"a": -1}}),
])  # fmt: skip
def test_model_references_parse_and_round_trip(spec: str, target: str, kwargs: dict) -> None:
    ref = parse_model_ref(spec)
    assert (ref.target, ref.kwargs) == (target, kwargs)
    assert parse_model_ref(ref.text) == ref  # the console's spelling parses back to the same reference
    rec = ref.record()
    assert rec["ref"] == target and rec["kwargs"] == kwargs
    json.dumps(rec)  # plain data
    back = ModelRef.from_record(rec, "ckpt.pt")
    assert (back.target, back.kwargs) == (target, kwargs)


@pytest.mark.parametrize("spec,says", [
    ("build", "give MODULE:FUNCTION[:key=value,...]"),
    ("my_net.py", "give MODULE:FUNCTION[:key=value,...]"),
    ("my_net.py:build:", "nothing after the second ':'"),
    ("my_net.py:build:num_classes", "'num_classes' is not key=value"),
    ("my_net.py:build:10", "'10' is not key=value"),
    ("my_net.py:build:1x=3", "'1x=3' is not key=value"),
    ("my_net.py:build:a=1,,b=2", "'' is not key=value"),
    ("my_net.py:build:a=1,a=2", "'a' is given twice"),
    ("my_net.py:build:a=(1,", "unclosed bracket"),
    ("my_net.py:build:a='x", "unclosed quote"),
    ("my_net.py:build:a=1)", "unmatched ')'"),
    ("my_net.py:build:a=[1 2]", "is not a Python literal"),
    ("my_net.py:build:a=b'x'", "is a bytes"),
    ("my_net.py:build:a={1, 2}", "is a set"),
])  # fmt: skip
def test_bad_references_name_the_bad_part_and_the_form(spec: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_model_ref(spec)
    text = str(info.value)
    assert says in text and "\n" not in text, text
    if "is a " not in says:
        assert "MODULE:FUNCTION[:key=value,...], e.g. 'torchvision.models:mobilenet_v3_small:num_classes=10'" in text


def test_keywords_the_function_does_not_take_show_its_signature(code: Path) -> None:
    assert isinstance(build_ref(f"{code}:build:num_classes=3,width=4"), torch.nn.Module)
    with pytest.raises(ValueError, match=r"build\(num_classes=10, width=16, stale=False\) does not take .*'depth'"):
        build_ref(f"{code}:build:depth=3")


# ------------------------------------------------------------------------------------- mismatches
def test_weight_mismatch_names_missing_unexpected_and_misshaped_keys(code: Path, tmp_path: Path) -> None:
    ref = parse_model_ref(f"{code}:build:width=8")
    theirs = build_ref(ref.with_kwargs(num_classes=1000)).state_dict()
    theirs.pop("features.0.1.weight")
    theirs.pop("features.0.1.bias")
    theirs["head.extra"] = torch.zeros(2)
    with pytest.raises(ValueError) as info:
        load_into(build_ref(ref), theirs, ref=ref)
    text = str(info.value)
    assert ("do not fit --model " + ref.text + ": 2 missing (features.0.1.weight, features.0.1.bias), 1 unexpected "
            "(head.extra), 2 mis-shaped (fc.weight: checkpoint (1000, 16) vs network (10, 16), fc.bias: checkpoint "
            "(1000,) vs network (10,)); build it with the checkpoint's num_classes, e.g. "
            f"{code}:build:width=8,num_classes=1000") in text  # fmt: skip
    # more than three of a kind: the first three and the count
    state = build_ref(ref).state_dict()
    few = {k: v for k, v in state.items() if not k.startswith("features.1")}
    with pytest.raises(ValueError, match=r": 5 missing \(features\.1\.0\.weight, features\.1\.1\.weight, "
                                         r"features\.1\.1\.bias, \.\.\. 2 more\), 0 unexpected, 0 mis-shaped$"):
        load_into(build_ref(ref), few, ref=ref)


def test_mismatch_message_on_the_command_line(code: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save(build_ref(f"{code}:build:num_classes=1000").state_dict(), tmp_path / "w.pt")
    assert main(["train", "--model", f"{code}:build", "--weights", str(tmp_path / "w.pt"), *TRAIN,
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0 missing, 0 unexpected, 2 mis-shaped (fc.weight: checkpoint (1000, 32) vs network " \
        f"(10, 32)" in err[0] and f"e.g. {code}:build:num_classes=1000" in err[0]
    assert "Error(s) in loading state_dict" not in err[0]


# ------------------------------------------------------------------------------------- the BN check
def test_finetune_model_recalibrates_lagging_bn_statistics(code: Path, tmp_path: Path) -> None:
    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    net = build_ref(f"{code}:build:stale=True")
    lines: list[str] = []
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, progress=False, threads=1)
    r = finetune_model(net, data, cfg, constructor=f"{code}:build:stale=True", out_dir=tmp_path / "run",
                       log=lines.append)  # fmt: skip
    bn = r.bn
    assert bn is not None and bn.recalibrated and bn.momenta == (0.01,)
    # every epoch evaluated the stale running statistics: chance level, far below batch statistics
    assert all(e.test is not None and e.test.top1 < 0.2 for e in r.train.history)
    assert bn.eval_top1 == r.train.history[-1].test.top1 and bn.batch_top1 >= bn.eval_top1 + 0.05
    assert bn.after_top1 > bn.eval_top1 + 0.05 and r.top1 == bn.after_top1
    assert lines == [bn.message()]
    assert (f"test top-1 {bn.eval_top1:.1%} with the running statistics, {bn.batch_top1:.1%} with batch statistics "
            f"(BN momentum 0.01)") in lines[0]  # fmt: skip
    assert f"re-estimated on {bn.images} training images" in lines[0]
    assert f"test top-1 {bn.eval_top1:.1%} → {bn.after_top1:.1%}" in lines[0]
    # the checkpoint holds the re-estimated statistics and says how the network is built
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck.config["constructor"]["ref"] == f"{code}:build" and ck.config["constructor"]["kwargs"] == {"stale": True}
    assert ck.config["bn_recalibration"]["after_top1"] == bn.after_top1
    back = load_any(tmp_path / "run" / "last.pt").model
    assert evaluate(back, data).top1 == pytest.approx(bn.after_top1)


def test_bn_statistics_that_fit_are_kept_untouched(code: Path) -> None:
    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    net = build_ref(f"{code}:build")
    finetune_model(net, data, TrainConfig(epochs=1, batch_size=64, lr=0.1, progress=False, threads=1), log=None)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bn = check_bn(net, data, gap=1.0)  # never "far below": measured, not re-estimated
    assert bn is not None and not bn.recalibrated and bn.images == 0 and bn.after_top1 == bn.eval_top1
    assert bn.eval_top1 == pytest.approx(evaluate(net, data).top1)
    assert "the running statistics fit; kept them" in bn.message()
    # the batch-statistics pass ran on a copy: nothing of the network changed
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert check_bn(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), data) is None  # no BN


# ------------------------------------------------------------------------------------- the command line
def test_analyze_a_file_reference_counts_exact_macs(code: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    macs = _macs(build_ref(f"{code}:build:width=8"), SHAPE)
    for argv in (["analyze", f"{code}:build:width=8"], ["analyze", "--model", f"{code}:build:width=8"]):
        assert main([*argv, "--input", "1x8x8", "--json", str(tmp_path / "a.json"), "-q"]) == 0
        assert json.loads((tmp_path / "a.json").read_text())["totals"]["macs"] == macs
        assert f"MACs {macs:,}" in capsys.readouterr().out
    # a width the zoo option would set goes into the reference instead
    assert main(["analyze", "--model", f"{code}:build", "--num-classes", "3"]) == 2
    assert "give your network's in the reference" in capsys.readouterr().err
    assert main(["analyze", f"{code}:build", "--model", f"{code}:build"]) == 2
    assert "both name" in capsys.readouterr().err


def test_train_explain_export_latency_analyze_without_model(code: Path, trained: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ckpt = trained / "last.pt"
    ck = load_checkpoint(ckpt)
    assert ck.arch is None and ck.config["constructor"] == {"ref": "slow_bn.py:build", "kwargs": {"stale": True},
                                                            "file": str(code.resolve())}  # fmt: skip
    doc = read_results(trained)
    assert doc["model"] == "slow_bn.py:build:stale=True" and doc["bn_check"]["momenta"] == [0.01]
    data = worker_data(DataRef("digits", image_size=8))
    model = load_any(ckpt).model
    top1 = evaluate(model, data).top1
    assert doc["top1"] == pytest.approx(top1)
    monkeypatch.chdir(tmp_path)  # another folder: the recorded file is found where it was
    notice = "the network built by its recorded constructor slow_bn.py:build:stale=True"
    assert main(["analyze", str(ckpt), "--json", "a.json", "-q"]) == 0
    assert json.loads(Path("a.json").read_text())["totals"]["macs"] == _macs(model, SHAPE)
    assert json.loads(Path("a.json").read_text())["input_shapes"] == [[1, *SHAPE]]
    assert notice in capsys.readouterr().err
    assert main(["explain", str(ckpt), "--data", "digits", "--count", "3", "--out", "x"]) == 0
    assert notice in capsys.readouterr().err
    ex = read_results("x")
    assert ex["model"] == "slow_bn.py:build:stale=True" and len(ex["cam"]["images"]) == 3
    assert main(["export", str(ckpt), "--target", "onnxruntime", "--int8", "off", "--out", "e", "--threads", "1",
                 "--max-seconds", "0.1", "--rounds", "1"]) == 0  # fmt: skip
    manifest = json.loads(Path("e/manifest.json").read_text())
    assert manifest["model"] == "slow_bn.py:build:stale=True" and manifest["input"]["shape"] == [1, *SHAPE]
    assert manifest["measured"]["top1"] == pytest.approx(top1, abs=0.01)  # ONNX Runtime on the same weights
    assert main(["latency", str(ckpt), "--threads", "1", "--max-seconds", "0.1", "--retries", "0",
                 "--json", "m.json"]) == 0  # fmt: skip
    m = json.loads(Path("m.json").read_text())["measurement"]
    assert m["input_shape"] == [1, *SHAPE] and m["stats"]["median_ms"] > 0
    assert notice in capsys.readouterr().err
    # train it further from the checkpoint alone: the new checkpoint records the same constructor
    assert main(["train", str(ckpt), *TRAIN, "--lr", "0.01", "--out", "t2"]) == 0
    assert load_checkpoint("t2/last.pt").config["constructor"]["kwargs"] == {"stale": True}
    assert notice in capsys.readouterr().err


def test_a_module_reference_by_name_through_the_commands(code: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    spec = f"{PKG}:SlowBN:num_classes=10,width=8"
    assert main(["analyze", "--model", spec, "--input", "1x8x8", "-q"]) == 0
    assert f"MACs {_macs(build_ref(spec), SHAPE):,}" in capsys.readouterr().out
    assert main(["train", spec, *TRAIN, "--out", str(tmp_path / "t")]) == 0
    ckpt = tmp_path / "t" / "last.pt"
    assert load_checkpoint(ckpt).config["constructor"] == {"ref": f"{PKG}:SlowBN",
                                                           "kwargs": {"num_classes": 10, "width": 8}}  # fmt: skip
    assert main(["explain", str(ckpt), "--data", "digits", "--count", "2", "--out", str(tmp_path / "x")]) == 0
    assert main(["latency", "--model", spec, "--input-size", "8", "--threads", "1", "--max-seconds", "0.1",
                 "--retries", "0"]) == 0  # fmt: skip
    assert "8²" in capsys.readouterr().out
    assert main(["latency", "build-table", "--table", str(tmp_path / "t.json"), "--model", spec]) == 2
    assert "--model does not apply to `latency build-table`" in capsys.readouterr().err
    assert main(["train", "resnet20_cifar", "--model", spec, *TRAIN, "--out", str(tmp_path / "t3")]) == 2
    assert "MODEL 'resnet20_cifar' and --model" in capsys.readouterr().err
    # --model given too wins over the recorded reference (and its weights must fit it)
    assert main(["export", str(ckpt), "--model", f"{PKG}:SlowBN:num_classes=10,width=16", "--int8", "off",
                 "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"over the recorded {PKG}:SlowBN:num_classes=10,width=8" in err
    assert "mis-shaped (features.0.0.weight: checkpoint (8, 1, 3, 3) vs network (16, 1, 3, 3)" in err


def test_a_recorded_reference_that_cannot_be_imported(trained: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    ck = load_checkpoint(trained / "last.pt")
    ck.config = {**ck.config, "constructor": {"ref": "no_such_module_xyz:build", "kwargs": {"num_classes": 10}}}
    save_checkpoint(ck, tmp_path / "moved.pt")
    for cmd in (["explain", str(tmp_path / "moved.pt"), "--data", "digits", "--out", str(tmp_path / "x")],
                ["analyze", str(tmp_path / "moved.pt")], ["latency", str(tmp_path / "moved.pt")],
                ["export", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "e")]):  # fmt: skip
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert ("records the constructor no_such_module_xyz:build:num_classes=10, which cannot be imported here"
                in err.replace("'", "")) and "pass --model MODULE:FUNCTION" in err, err
    # a checkpoint that records none: pass --model
    del ck.config["constructor"]
    save_checkpoint(ck, tmp_path / "bare.pt")
    assert main(["explain", str(tmp_path / "bare.pt"), "--data", "digits", "--out", str(tmp_path / "y")]) == 2
    assert "no EdgeNet and records no constructor; pass --model" in capsys.readouterr().err


def test_a_recorded_reference_into_the_standard_library_is_refused(trained: Path, tmp_path: Path) -> None:
    ck = load_checkpoint(trained / "last.pt")
    marker = tmp_path / "ran"
    for ref, kwargs in (("os:system", {"command": f"touch {marker}"}), ("subprocess:run", {"args": ["true"]}),
                        ("torch.hub:load", {"repo_or_dir": "x"}), ("torch:load", {"f": str(marker)})):  # fmt: skip
        ck.config = {**ck.config, "constructor": {"ref": ref, "kwargs": kwargs}}
        save_checkpoint(ck, tmp_path / "evil.pt")
        with pytest.raises(ValueError, match="no network builder"):
            load_any(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_compressed_checkpoint_explains_without_model(code: Path, trained: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """``edgecnn compress --model`` notes the reference in its result: the pruned network rebuilds from it."""
    torch.save(load_checkpoint(trained / "last.pt").state_dict, tmp_path / "w.pt")
    spec = f"{code}:build:stale=True"
    assert main(["compress", str(tmp_path / "w.pt"), "--model", spec, "--data", "digits", "--image-size", "8",
                 "--budget", "50%macs", "--method", "prune", "--out", str(tmp_path / "c"), "--workers", "0",
                 "--round-to", "4", "--long-epochs", "0.2", "--batch-size", "64", "--no-progress"]) == 0  # fmt: skip
    doc = read_results(tmp_path / "c")
    pruned = load_any(tmp_path / "c" / "model.pt").model  # replayed on the network the reference builds
    assert _macs(pruned, SHAPE) == doc["after"]["macs"] < doc["before"]["macs"]
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "c" / "model.pt"), "--data", "digits", "--count", "2", "--out",
                 str(tmp_path / "x")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"recorded constructor {spec}" in err and "records no input normalisation" not in err  # compress keeps it
    assert main(["analyze", str(tmp_path / "c" / "model.pt"), "-q"]) == 0
    assert f"MACs {doc['after']['macs']:,}" in capsys.readouterr().out


def test_compress_a_trained_own_network_without_model_then_export_from_elsewhere(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train --model`` → ``compress`` with no --model (the recorded constructor) → ``export`` from another folder."""
    out = tmp_path / "c"
    assert main(["compress", str(trained / "last.pt"), "--data", "digits", "--image-size", "8", "--budget", "50%macs",
                 "--method", "prune", "--out", str(out), "--workers", "0", "--round-to", "4", "--long-epochs", "0.2",
                 "--batch-size", "64", "--no-progress"]) == 0  # fmt: skip
    assert "built by its recorded constructor slow_bn.py:build:stale=True" in capsys.readouterr().err
    doc = read_results(out)
    ckpt = load_checkpoint(out / "model.pt")
    rec = ckpt.config["constructor"]
    assert rec["ref"] == "slow_bn.py:build" and rec["kwargs"] == {"stale": True} and Path(rec["file"]).is_absolute()
    monkeypatch.chdir(tmp_path)  # slow_bn.py is not here: the recorded absolute path finds it
    pruned = load_any(out / "model.pt").model
    assert _macs(pruned, SHAPE) == doc["after"]["macs"] <= 0.5 * doc["before"]["macs"]
    assert main(["export", str(out / "model.pt"), "--data", "digits", "--target", "onnxruntime", "--int8", "off",
                 "--out", str(tmp_path / "e")]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", str(out / "model.pt"), "--json"]) == 0  # the pruned network, rebuilt and evaluated
    printed = capsys.readouterr()
    assert json.loads(printed.out)["top1"] == pytest.approx(doc["after"]["top1"])
    assert "recorded constructor slow_bn.py:build:stale=True" in printed.err
    # compressing a compressed result again is refused with what to do instead
    assert main(["compress", str(out / "model.pt"), "--data", "digits", "--budget", "50%macs", "--method", "prune",
                 "--out", str(tmp_path / "again")]) == 2  # fmt: skip
    assert "compress the network it started from" in capsys.readouterr().err


@pytest.mark.parametrize("source,message", [
    ("import torch\n\nraise RuntimeError('no GPU here')\n", "importing {f} failed at {f} line 3: RuntimeError: no GPU here"),
    ("from torch import nn\n\n\ndef build(width=4):\n    return nn.Conv2d(1, width, 3, bogus=1)\n",
     "calling build() failed at {f} line 5: TypeError:"),
    ("from torch import nn\n\n\ndef build(width=4):\n    return nn.Conv2d(3, width, 3)\n",
     "does not run on the data's images (1, 8, 8)"),
    ("from torch import nn\n\n\ndef build(width=4):\n    return nn.Conv2d(1, width, 3)\n",
     "gives (1, 4, 6, 6) per image, the data has 10 classes: build it with that many outputs, e.g. "
     "{f}:build:width=4,num_classes=10"),
])  # fmt: skip
def test_broken_code_is_one_line_naming_the_command(tmp_path: Path, capsys: pytest.CaptureFixture, source: str,
                                                    message: str) -> None:  # fmt: skip
    net = tmp_path / "broken.py"
    net.write_text(source)
    assert main(["train", "--model", f"{net}:build:width=4", *TRAIN, "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(f=net) in err[0], err
    if "failed at" in message:
        assert "`edgecnn --debug train ...` shows the traceback" in err[0]


def test_the_demo_on_your_own_network(code: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``edgecnn demo --model FILE:FN:kw``: trained, analysed, timed, NetAdapt in module space measured end to end
    on the target (no table), the result's checkpoint rebuilt without --model."""
    out = tmp_path / "demo"
    assert main(["demo", "--model", f"{code}:build:width=32", "--epochs", "1", "--image-size", "16", "--out", str(out),
                 "--budget", "0.8", "--short-steps", "0", "--long-epochs", "0.1", "--initial-step", "0.2",
                 "--measured-rounds", "0", "--cam-images", "2", "--no-int8", "--target", "onnxruntime"]) == 0  # fmt: skip
    res = read_results(out)
    assert res["arch"] == f"{code}:build:width=32" and res["target"] == "onnxruntime"
    net = load_any(out / "model.pt").model
    # per-block rows are the network's top-level modules; their MACs add up to FlopCounterMode's
    assert [b["name"] for b in res["blocks"]] == ["features", "pool", "fc"]
    assert sum(b["macs"] for b in res["blocks"]) == res["macs"] == _macs(net, (1, 16, 16))
    stages = {s["name"]: s["status"] for s in res["stages"]}
    assert stages["table"] == "skipped" and stages["netadapt"] == "done"
    r = res["result"]
    pruned = load_any(out / "model-netadapt.pt").model  # pruning steps replayed on the recorded constructor
    assert _macs(pruned, (1, 16, 16)) == r["macs"] < res["macs"] and r["arch"] is None
    assert r["target_ms"] > 0 and r["baseline_target_ms"] > 0 and isinstance(r["met"], bool)
    assert "your own network has no arch string" in capsys.readouterr().out
