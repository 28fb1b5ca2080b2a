"""ONNX Runtime: one way to open a session (session.py) and one runner behind the Backend interface."""
