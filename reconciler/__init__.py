"""tfs-reconciler: declarative, GitOps-style reconciler for TensorFlow Serving model versions."""

__version__ = "0.1.0"
