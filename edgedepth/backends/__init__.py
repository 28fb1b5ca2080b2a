"""Every inference engine in one place, shared by the stages that build, calibrate, benchmark and run models.

    edgedepth.backends.base          the Backend interface: infer(batch) -> (depth, uncertainty), close()
    edgedepth.backends.onnxruntime   session.py: the one way to open an InferenceSession; runner.py: OrtRunner
    edgedepth.backends.tensorrt      build.py, engine.py (TrtRunner), calibrator.py, ops.py, manifest.py, and
                                     cuda.py: the thread that owns a backend's CUDA context

Nothing here imports the workstation stages (export, calibrate, bench, train, models); onnxruntime,
tensorrt and pycuda are imported inside the functions that need them.
"""
