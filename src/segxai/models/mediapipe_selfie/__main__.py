"""``python -m segxai.models.mediapipe_selfie``: fetch the selfie model into the segxai cache."""

from segxai.models.mediapipe_selfie.fetch import main

raise SystemExit(main())
