"""Training, fine-tuning and evaluation of classification networks on an in-memory :class:`DataSet`.

One loop serves the CLI (``edgecnn train``), long runs and the thousands of
short fine-tunes NetAdapt and architecture search make (:func:`finetune`;
plain arguments that pickle to a worker process, no global state beyond the
torch RNG the run seeds). Its parts, with the papers they follow:

- SGD with Nesterov momentum or AdamW (Loshchilov & Hutter 2019), no weight
  decay on BN parameters and biases (weight decay before BN only changes the
  effective learning rate; decaying BN's own scale and shift hurts);
- linear warm-up (Goyal et al. 2017) then cosine decay ("SGDR", Loshchilov &
  Hutter 2017), computed from the step number, so a resume needs no scheduler state;
- label smoothing (Szegedy et al. 2016, "Rethinking the Inception architecture", §7);
- an exponential moving average of the weights (Polyak averaging, as in the
  MnasNet/EfficientNet/MobileNetV3 recipes), with the TensorFlow warm-up of the decay;
- knowledge distillation from a teacher (Hinton et al. 2015, :mod:`edgecnn.train.distill`);
- mixed precision (bf16 autocast, or fp16 with loss scaling) — by default on
  CUDA; on a CPU with AMX ``precision="bf16"`` speeds ResNet-20 steps up 1.8×
  (and ResNet-20 ×2 1.8× on a Zen 4 EPYC's AVX512-BF16: 0.72 s against 1.32 s
  a batch of 128 on one thread) but MobileNetV2 (depthwise convolutions, BN)
  only 1.1×, so it is opt-in there (and warned against on a CPU without
  AVX-512, where oneDNN has no bf16 kernels: ~12× slower than fp32); a run may
  resume in another precision, and every epoch records the one it ran in
  (``EpochStats.precision``); channels_last memory format by default: oneDNN's
  convolutions, depthwise ones most, run faster in NHWC. ``benchmarks/train_cifar.py``:
  against a plain NCHW loop with per-sample PIL augmentation, 1.2× for
  ResNet-20 and 1.5× for MobileNetV2-0.5 on this project's 2-core Xeon;
- DDP through ``torchrun`` on the same code path: each process takes its share
  of every global batch (:class:`edgecnn.data.BatchLoader`);
- a checkpoint after every epoch, written atomically; Ctrl-C finishes the step
  and saves one; ``resume=True`` continues bit-for-bit where it stopped;
- a non-finite loss stops the run with :class:`NonFiniteLossError`, keeping the
  last good checkpoint.

Where each part lives: :mod:`~edgecnn.train.config` (the recipe and the
result dataclasses), :mod:`~edgecnn.train.optim` (schedule, EMA, optimiser),
:mod:`~edgecnn.train.runtime` (device, DDP, autocast, Ctrl-C, progress bar),
:mod:`~edgecnn.train.evaluation` (:func:`evaluate`),
:mod:`~edgecnn.train.resume` (what ``last.pt`` holds beyond the weights) and
:mod:`~edgecnn.train.loop` (:func:`fit`, :func:`finetune`) and :mod:`~edgecnn.train.foreign`
(:func:`finetune_model`: a network of your own code, its constructor recorded in the checkpoint and its
BatchNorm statistics checked, re-estimated where they lag; docs/own_network.md).
"""

from edgecnn.train.config import FINETUNE, EpochStats, EvalResult, NonFiniteLossError, TrainConfig, TrainResult
from edgecnn.train.config import PRECISIONS as PRECISIONS
from edgecnn.train.evaluation import evaluate
from edgecnn.train.foreign import BnCheck, OwnResult, check_bn, finetune_model
from edgecnn.train.loop import finetune, fit
from edgecnn.train.optim import ModelEma, lr_at, make_optimizer, param_groups

__all__ = [
    "FINETUNE",
    "BnCheck",
    "EpochStats",
    "EvalResult",
    "ModelEma",
    "NonFiniteLossError",
    "OwnResult",
    "TrainConfig",
    "TrainResult",
    "check_bn",
    "evaluate",
    "finetune",
    "finetune_model",
    "fit",
    "lr_at",
    "make_optimizer",
    "param_groups",
]
