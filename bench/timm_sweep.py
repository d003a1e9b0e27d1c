"""Real architectures the tests do not build, cut and judged like the fuzz's random graphs.

Each timm architecture (built offline, random weights: `timm.create_model(name,
pretrained=False)`) is exported with the TorchScript exporter in three prunings: unpruned,
naive (50% `ln_structured` on every conv and linear layer, the seed's recipe) and groups (40%
of its coupled channel groups zeroed, channelcut.torch_groups), and each export is cut in
every mode of --modes and judged independently (tests/cutcheck.py: no crash, no refused cut,
outputs equal in ONNX Runtime with graph optimizations off on three inputs, full checker,
interface kept, no weight growth, a second cut removes nothing). An architecture that does not build or
export here is listed as skipped with the reason; that is not channelcut's failure.

    python bench/timm_sweep.py [--models NAME ...] [--size 64] [--processes 2]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.append(str(REPO))  # an installed or PYTHONPATH channelcut comes first
os.environ["CHANNELCUT_STRICT"] = "1"  # an op rule that raises is a crash here, as in tests

# convolutional families first, then the hybrid and attention ones; all build at 64x64 unless
# noted (--size)
MODELS = [
    "resnet18d", "resnet26t", "seresnext26d_32x4d", "skresnet18", "res2net50_14w_8s",
    "resnest14d", "regnetx_002", "regnety_002", "cspresnet50", "cspdarknet53", "dla34",
    "dpn68", "hrnet_w18_small", "repvgg_a0", "gernet_s", "selecsls42b", "rexnet_100",
    "ghostnet_100", "mobilenetv3_small_100", "efficientnet_lite0", "mixnet_s", "tinynet_a",
    "lcnet_050", "fbnetc_100", "hgnetv2_b0", "nfnet_l0", "convnextv2_atto", "edgenext_xx_small",
    "poolformer_s12", "mobilevit_xxs", "efficientvit_b0", "fastvit_t8", "pvt_v2_b0",
    "levit_128s", "deit_tiny_patch16_224", "vit_tiny_patch16_224", "coat_lite_tiny",
    # added on 2026-12-01: more families (Xception, NAS, MobileNetV4, VoVNet, RepViT, MLP
    # mixers, XCiT, Swin, MambaOut, ...)
    "xception41", "mnasnet_100", "mobilenetv4_conv_small", "efficientformerv2_s0",
    "tiny_vit_5m_224", "resmlp_12_224", "mixer_s16_224", "gmlp_ti16_224",
    "xcit_nano_12_p16_224", "visformer_tiny", "eca_resnet33ts", "gcresnet33ts", "cs3darknet_s",
    "ese_vovnet19b_dw", "inception_next_tiny", "mobileone_s0", "ghostnetv2_100",
    "resnetv2_50x1_bit", "starnet_s1", "repvit_m0_9", "efficientvit_m0",
    "swin_tiny_patch4_window7_224", "mambaout_femto",
]
PRUNINGS = ("unpruned", "naive", "groups")
GROUP_FRACTION = 0.4


def _build(name: str, size: int):
    import torch  # noqa: PLC0415 - only in the worker processes

    import zoo  # noqa: PLC0415

    zoo.import_torchvision()
    import timm  # noqa: PLC0415

    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        model = timm.create_model(name, pretrained=False, img_size=size)
    except TypeError:  # a convnet takes no img_size
        model = timm.create_model(name, pretrained=False)
    zoo.randomize(model)
    return model.eval()


def _pruned(model, pruning: str, shape: tuple[int, ...]):
    import copy  # noqa: PLC0415

    import zoo  # noqa: PLC0415
    from channelcut.torch_groups import (module_channel_groups, pick_groups,  # noqa: PLC0415
                                         zero_module_groups)

    model = copy.deepcopy(model)
    if pruning == "naive":
        zoo.prune_ln_structured(model, 0.5, dim=0, linear=True)
    elif pruning == "groups":
        groups = module_channel_groups(model, shape)
        zero_module_groups(model, pick_groups(groups, GROUP_FRACTION, seed=0))
    return model


def sweep_model(name: str, size: int, modes: list[str]) -> list[tuple]:
    """(name, pruning, mode, nodes, findings or None, skip reason, seconds) rows."""
    import cutcheck  # noqa: PLC0415
    import zoo  # noqa: PLC0415

    shape = (1, 3, size, size)
    warnings.simplefilter("ignore")
    try:
        model = _build(name, size)
    except Exception as exc:  # noqa: BLE001 - an architecture that does not build is skipped
        return [(name, "-", "-", 0, None, f"build: {type(exc).__name__}: {str(exc)[:120]}", 0.0)]
    rows = []
    for pruning in PRUNINGS:
        try:
            proto = zoo.export_onnx(_pruned(model, pruning, shape), shape)
        except Exception as exc:  # noqa: BLE001
            rows.append((name, pruning, "-", 0, None,
                         f"prune/export: {type(exc).__name__}: {str(exc)[:120]}", 0.0))
            continue
        ref = cutcheck.reference(proto)
        for mode in modes:
            start = time.perf_counter()
            findings = cutcheck.failures(cutcheck.judge(proto, mode, ref))
            rows.append((name, pruning, mode, len(proto.graph.node), findings, "",
                         time.perf_counter() - start))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--modes", nargs="+", default=["zero", "full"],
                        choices=["zero", "full", "params", "align8"])
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rows: list[tuple] = []
    with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
        futures = {pool.submit(sweep_model, name, args.size, args.modes): name
                   for name in args.models}
        for future in concurrent.futures.as_completed(futures):
            try:
                rows += future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died is a crash
                rows.append((futures[future], "-", "-", 0, [f"worker: {exc!r}"[:200]], "", 0.0))
    rows.sort(key=lambda r: (args.models.index(r[0]), r[1], r[2]))
    print(f"channelcut on timm architectures at {args.size}x{args.size}, modes "
          f"{', '.join(args.modes)}; each cut judged by tests/cutcheck.py")
    print(f"{'model':26} {'pruning':9} {'mode':5} {'nodes':>5} {'s':>6}  verdict")
    counts: collections.Counter[str] = collections.Counter()
    for name, pruning, mode, nodes, findings, skip, seconds in rows:
        if skip:
            counts["skipped"] += 1
            verdict = f"skipped ({skip})"
        elif findings:
            counts["failed"] += 1
            verdict = "FAIL " + "; ".join(str(f) for f in findings)[:300]
        else:
            counts["ok"] += 1
            verdict = "ok"
        print(f"{name:26} {pruning:9} {mode:5} {nodes:5} {seconds:6.1f}  {verdict}")
    judged = counts["ok"] + counts["failed"]
    print(f"\n{judged} cuts judged on {len({r[0] for r in rows if not r[5]})} architectures: "
          f"{counts['ok']} ok, {counts['failed']} failed; {counts['skipped']} skipped "
          f"(did not build or export here); {time.perf_counter() - start:.0f} s")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
