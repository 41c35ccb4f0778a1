"""Output-aware packing: the smallest archive whose model still gives the same answers.

The rooms: :mod:`.menu` (what a tensor may be given), :mod:`.engine` (measure one tensor at a
time, allocate, verify end to end), :mod:`.allocate` (the allocation, a pure function),
:mod:`.pack` (write the archive and prove it), :mod:`.report` (text and the saturation plot);
for ONNX models run by onnxruntime: :mod:`.calibration` (the user's input batches),
:mod:`.outputs` (output metrics) and :mod:`.onnx_runner`. Codecs never learn that a search
exists; the evaluation callable is the only thing that knows the model.
"""

from .engine import SearchReport, TensorResult, Trial
from .menu import Option, default_menu

__all__ = ["SearchReport", "TensorResult", "Trial", "Option", "default_menu"]
