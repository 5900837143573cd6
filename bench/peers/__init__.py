"""What a user would run instead of the service, for ``bench.perf --peers``.

* :mod:`bench.peers.naive`: the pipeline a user writes in an afternoon (full Pillow decode, resize to the
  model's input, onnxruntime with one intra-op thread, CAM = W[y]·V upsampled to the image, 20 % of max,
  bounding box); no decoder settings, no post-processing of the service's.
* :mod:`bench.peers.fastapi_app`: that pipeline behind a minimal FastAPI app (sync ``def`` routes, ``UploadFile``).
* :mod:`bench.peers.bento_naive`: the same pipeline as a BentoML service, default or tuned
  (``PEER_BENTO_THREADS``); run from ``.venv-bento``, never imported by the app or the tests.
* :mod:`bench.peers.drive`: what ``bench.perf`` uses to start these (and its BentoML contender), warm them up
  and skip those that fail.
"""
