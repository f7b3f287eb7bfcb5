"""MediaPipe's selfie segmentation model, converted from its TFLite file into PyTorch.

``fetch`` takes the file from the mediapipe wheel at install time (verified by SHA-256),
``reader`` decodes the flatbuffer, ``ops`` holds one module per TFLite operator,
``network`` runs a graph of them and ``model`` is the selfie network itself.
"""

from segxai.models.mediapipe_selfie.fetch import fetch_selfie, selfie_path
from segxai.models.mediapipe_selfie.model import (
    SELFIE_LAYERS,
    SELFIE_STAGES,
    SelfieSegmentation,
    selfie,
)
from segxai.models.mediapipe_selfie.network import TFLiteNetwork
from segxai.models.mediapipe_selfie.reader import read_tflite

__all__ = ["SELFIE_LAYERS", "SELFIE_STAGES", "SelfieSegmentation", "TFLiteNetwork", "fetch_selfie",
           "read_tflite", "selfie", "selfie_path"]
