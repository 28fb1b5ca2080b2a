"""The on-device runtime: sources -> backend -> postprocessing -> sinks, selection -> spool.

Modules (each usable on its own; no torch/onnx, TensorRT and pycuda imported lazily):
  sources.py     source URIs and raw readers (V4L2, CSI/GStreamer, RTSP, files, images, synthetic scenes)
  capture.py     capture thread: latest-frame semantics, reconnection with back-off, end of stream
  backends/      Backend interface + load_backend(); onnxruntime.py (CPU/CUDA/TensorRT EP), tensorrt.py
  postprocess.py DepthResult: metric depth, confidence mask, per-frame reliability flag
  selection.py   hard-frame scoring (uncertainty, temporal inconsistency, novelty, atypicality) + budgets
  collect.py     selected frames (+ neighbours t-k/t+k, ground truth) -> spool items, in a writer thread
  sinks.py       display, video, image sequence, 16-bit depth PNG, PLY point clouds
  pointcloud.py  back-projection, PLY writing, calibration files
  stats.py       fps / latency percentiles / drops; JSON lines; Prometheus text over http.server
  loop.py        DepthLoop: the pipelined loop, with swap_backend() and a health-check rollback

The smallest program::

    from edgedepth.runtime.backends import load_backend
    from edgedepth.runtime.capture import open_source
    from edgedepth.runtime.loop import DepthLoop

    backend = load_backend("bundle/")                     # best backend for this machine, logged
    with open_source("csi://0") as source:
        DepthLoop(source, backend, on_result=lambda r: print(r.seq, r.depth.mean(), r.reliable)).run()
"""
