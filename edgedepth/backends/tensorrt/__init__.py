"""TensorRT: engine build (build.py), calibration (calibrator.py), parser coverage (ops.py), the engine
manifest (manifest.py), running an engine (engine.py) and the thread that owns its CUDA context (cuda.py).
tensorrt and pycuda are imported inside functions only."""
