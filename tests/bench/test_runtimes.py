"""`edgedepth bench`: runtimes side by side on a tiny bundle (tiny model, 64x64), plus the timing maths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgedepth.bench.runtimes import parse_backends, parse_sizes
from edgedepth.bench.timing import TimedRuntime, latency_summary, percentiles, round_robin
from edgedepth.errors import ConfigError

H = W = 64


def _quantize(src: Path, dst: Path, symmetric: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": rng.standard_normal((1, 3, H, W)).astype(np.float32)}
                               for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tmp/tiny.pt + tmp/bundle (model.onnx, both INT8 variants, manifest); the .pt sits beside the bundle."""
    import torch
    from edgedepth.export.onnx import export_onnx

    from edgedepth import bundle as layout
    from edgedepth.checkpoint import save_checkpoint
    from edgedepth.models.catalog import build_model, model_config
    from edgedepth.preprocess import Preprocessing

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    cfg = model_config("tiny")
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(root / "tiny.pt", model, cfg, Preprocessing(H, W), name="tiny-test", version="1")
    out = root / "bundle"
    export_onnx(str(ckpt), str(out), parity_frames=2)
    _quantize(out / layout.MODEL_FP32, out / layout.MODEL_INT8_CPU, symmetric=False)
    _quantize(out / layout.MODEL_FP32, out / layout.MODEL_INT8_TRT, symmetric=True)
    layout.write_manifest(out)
    return root, out, ckpt


# ------------------------------------------------------------------------------------------ timing maths
def test_percentiles_on_known_timings():
    p = percentiles(list(range(1, 101)))  # 1..100 ms: rank q/100 * 99, linear interpolation
    assert p == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([10.0, 20.0]) == pytest.approx({"p50": 15.0, "p95": 19.5, "p99": 19.9})
    assert all(np.isnan(v) for v in percentiles([]).values())
    s = latency_summary([10.0, 10.0, 20.0, 40.0])
    assert s["mean"] == pytest.approx(20.0) and s["min"] == 10.0 and s["fps"] == pytest.approx(50.0)
    assert latency_summary([10.0], block_fps=[90.0, 100.0, 130.0])["fps"] == 100.0  # median of blocks


def test_round_robin_interleaves_rotates_and_times_each_run():
    calls = []
    now = [0.0]
    cost = {"a": 0.010, "b": 0.020, "c": 0.005}

    def make(name):
        def run(i):
            calls.append(name)
            now[0] += cost[name]
        return run

    rts = [TimedRuntime(n, make(n)) for n in "abc"]
    round_robin(rts, runs=7, block=3, warmup=1, clock=lambda: now[0])
    for rt in rts:
        assert len(rt.samples_ms) == 7  # blocks of 3, 3, 1
        assert rt.samples_ms == pytest.approx([cost[rt.name] * 1000] * 7)
        assert rt.block_fps == pytest.approx([1 / cost[rt.name]] * 3)
    # each block: every runtime once (1 warm-up + n timed), order rotated block by block
    firsts = [calls[0], calls[12], calls[24]]
    assert firsts == ["a", "b", "c"]
    assert calls[:12] == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert calls[24:] == ["c"] * 2 + ["a"] * 2 + ["b"] * 2


def test_round_robin_drops_a_failing_runtime_and_keeps_the_others():
    state = {"n": 0}

    def flaky(i):
        state["n"] += 1
        if state["n"] > 3:
            raise RuntimeError("device lost")

    good = TimedRuntime("good", lambda i: None)
    bad = TimedRuntime("bad", flaky)
    round_robin([good, bad], runs=6, block=2)
    assert "device lost" in bad.error
    assert len(good.samples_ms) == 6


def test_parse_options():
    assert parse_sizes("224x224, 96X128,224x224") == [(224, 224), (96, 128)]
    with pytest.raises(ConfigError, match="multiples of 32"):
        parse_sizes("100x100")
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        parse_sizes("224")
    assert "ort-fp32" in parse_backends("all") and "loop" in parse_backends(None)
    assert parse_backends("pytorch,trt-fp16") == ["pytorch", "trt-fp16"]
    with pytest.raises(ConfigError, match="unknown backend"):
        parse_backends("tflite")


# ------------------------------------------------------------------------------------------ the bench
def _rows(report_json, size="64x64"):
    sizes = {f"{s['height']}x{s['width']}": s for s in report_json["sizes"]}
    return {r["key"]: r for r in sizes[size]["rows"]}


def test_bench_cli_tiny_bundle_table_json_png(tiny, tmp_path):
    import onnxruntime as ort

    from edgedepth.bench.suite import SYNTH_SEED
    from edgedepth.cli.main import cli
    from edgedepth.data import synth
    from edgedepth.metrics import frame_metrics, mean_metrics
    from edgedepth.modelmeta import read_onnx_info
    from edgedepth.preprocess import Preprocessing

    _root, bundle, ckpt = tiny
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    res = CliRunner().invoke(cli, ["bench", str(bundle), "--threads", "1", "--frames", "3", "--runs", "6",
                                   "--block", "3", "--json", str(out_json), "--png", str(out_png)])
    assert res.exit_code == 0, res.output
    report = json.loads(out_json.read_text())
    rows = _rows(report)
    for key in ("pytorch", "ort-fp32", "ort-int8-cpu", "ort-int8-trt"):
        r = rows[key]
        assert r["status"] == "ok", r
        lat = r["latency_ms"]
        assert lat["runs"] == 6 and 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"]
        assert lat["fps"] > 0
        assert r["memory"]["peak_rss_mb"] > r["memory"]["library_rss_mb"] > 10
        assert r["memory"]["delta_rss_mb"] >= 0
        assert 0 < r["accuracy"]["abs_rel"] < 10 and 0 <= r["accuracy"]["d1"] <= 1
        assert r["label"] in res.output
    assert rows["opencv"]["status"] in ("ok", "failed") and (rows["opencv"]["status"] == "ok"
                                                                or rows["opencv"]["reason"])
    # PyTorch eager was found beside the bundle by the checkpoint SHA-256 the export recorded
    assert report["checkpoint"] == str(ckpt)
    # same weights: PyTorch and ONNX Runtime FP32 agree, and the INT8 graphs stay close
    assert rows["pytorch"]["rel_diff_vs"]["mean_rel_depth_diff"] < 1e-4
    assert rows["ort-int8-cpu"]["rel_diff_vs"]["mean_rel_depth_diff"] < 0.2
    # GPU-only runtimes are listed with their reason, not silently dropped
    assert rows["trt"]["status"] == "skipped" and "tensorrt" in rows["trt"]["reason"]
    assert rows["ort-cuda"]["status"] == "skipped" and "CUDAExecutionProvider" in rows["ort-cuda"]["reason"]
    assert "skipped: " in res.output
    # accuracy equals an independent scoring of onnxruntime's output on the same synthetic frames
    pre = read_onnx_info(str(bundle / "model.onnx")).preprocessing
    assert pre == Preprocessing(H, W)
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    per = []
    for i in range(3):
        f = synth.render_frame("indoor", SYNTH_SEED + i, H, W)
        d = sess.run(["depth"], {"image": pre.apply(f.rgb)})[0][0, 0]
        per.append(frame_metrics(d, f.depth, None, pre.min_depth, pre.max_depth))
    expect = mean_metrics(per)
    assert rows["ort-fp32"]["accuracy"]["abs_rel"] == pytest.approx(expect["abs_rel"], rel=1e-5)
    assert rows["ort-fp32"]["accuracy"]["d1"] == pytest.approx(expect["d1"], abs=1e-9)
    # speed-up figure, machine, live loop
    assert "ONNX Runtime FP32 vs PyTorch eager" in res.output
    ratio = report["ratios"]["64x64"]["ort-fp32_vs_pytorch"]
    p50 = {k: rows[k]["latency_ms"]["p50"] for k in ("pytorch", "ort-fp32")}
    assert ratio == pytest.approx(p50["pytorch"] / p50["ort-fp32"], rel=1e-2)
    assert report["machine"]["cores_usable"] >= 1 and report["machine"]["libraries"]["numpy"]
    assert "machine:" in res.output and "numpy" in res.output
    loop = report["loop"]
    assert 0.2 < loop["efficiency"] < 1.5 and loop["loop_fps"] > 0, loop
    assert "pipeline efficiency" in res.output
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_opencv_failure_is_reported_not_raised(tiny, monkeypatch):
    import cv2

    from edgedepth.bench.report import format_report
    from edgedepth.bench.suite import run_bench

    def refuse(path):
        raise cv2.error("OpenCV(5.0) onnx_importer.cpp:1: error: (-2:Unspecified error) "
                        "unsupported layer type 'Exp' in function 'parse'")

    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", refuse)
    _root, bundle, _ckpt = tiny
    report = run_bench(str(bundle), backends="opencv,ort-fp32", threads=1, frames=2, runs=3, block=3,
                       memory=False)
    rows = {r["key"]: r for r in report.sizes[0].rows}
    assert rows["opencv"]["status"] == "failed"
    assert "cannot load" in rows["opencv"]["reason"] and "unsupported layer" in rows["opencv"]["reason"]
    assert rows["ort-fp32"]["status"] == "ok" and rows["ort-fp32"]["latency_ms"]["runs"] == 3
    text = format_report(report)
    assert "OpenCV DNN" in text and "failed: OpenCV" in text


def test_missing_checkpoint_omits_pytorch_with_a_reason(tiny, tmp_path):
    from edgedepth.bench.report import format_report
    from edgedepth.bench.suite import run_bench

    _root, bundle, _ckpt = tiny
    alone = tmp_path / "moved" / "bundle"
    shutil.copytree(bundle, alone)  # no checkpoint beside it any more
    report = run_bench(str(alone), backends="pytorch,ort-fp32", threads=1, frames=2, runs=3, block=3,
                       memory=False)
    rows = {r["key"]: r for r in report.sizes[0].rows}
    assert rows["pytorch"]["status"] == "skipped" and "--checkpoint" in rows["pytorch"]["reason"]
    assert rows["ort-fp32"]["status"] == "ok"
    assert report.checkpoint is None
    assert "speed-up vs PyTorch eager: not available" in format_report(report)

    report = run_bench(str(alone), checkpoint=str(tmp_path / "nope.pt"), backends="pytorch", threads=1,
                       frames=2, runs=3, block=3, memory=False)
    row = report.sizes[0].rows[0]
    assert row["status"] == "skipped" and "nope.pt does not exist" in row["reason"]


def test_other_sizes_rewrite_the_onnx_graph(tiny):
    from edgedepth.bench.suite import run_bench

    _root, bundle, ckpt = tiny
    report = run_bench(str(bundle), checkpoint=str(ckpt), backends="pytorch,ort-fp32,ort-int8-cpu",
                       sizes=[(96, 64)], threads=1, frames=2, runs=3, block=3, memory=False)
    size = report.sizes[0]
    assert (size.height, size.width) == (96, 64)
    ort_row = size.row("ort-fp32")
    assert ort_row["status"] == "ok" and "rewritten" in ort_row["note"]
    assert size.row("ort-int8-cpu")["status"] == "ok"
    # the rewritten graph computes what PyTorch computes at that size
    assert size.row("pytorch")["rel_diff_vs"]["mean_rel_depth_diff"] < 1e-4


def test_round_robin_budget_stops_all_runtimes_at_the_same_count():
    now = [0.0]

    def slow(i):
        now[0] += 1.0  # one second per run

    rts = [TimedRuntime("slow", slow), TimedRuntime("fast", lambda i: None)]
    round_robin(rts, runs=100, block=5, warmup=0, clock=lambda: now[0], budget_s=12.0)
    # blocks of 5 s: the budget is passed after block 3 (15 s), so no 4th block starts
    assert [len(r.samples_ms) for r in rts] == [15, 15]
