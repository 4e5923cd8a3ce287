"""rmserve: train reward models from human rankings, export them to ONNX, serve them to RL trainers.

Importing the package imports nothing else: `rmserve.client` needs only `requests`.
"""

__version__ = "0.1.0"
