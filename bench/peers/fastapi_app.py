"""The minimal FastAPI app a user writes around :mod:`bench.peers.naive`:

uvicorn bench.peers.fastapi_app:app --port 8001
"""

from typing import Annotated, Any

from fastapi import FastAPI, File, UploadFile

from bench.peers.naive import cam_top1, load_models, localize, pose

app = FastAPI()
cam_model, loc_model, pose_model = load_models()


@app.post("/cam")
def cam(image: Annotated[UploadFile, File()], top_k: int = 1) -> dict[str, Any]:
    return {"classes": [cam_top1(cam_model, image.file.read())]}


@app.post("/localize")
def localize_route(image: Annotated[UploadFile, File()]) -> dict[str, Any]:
    return localize(loc_model, image.file.read())


@app.post("/pose")
def pose_route(image: Annotated[UploadFile, File()]) -> dict[str, Any]:
    return pose(pose_model, image.file.read())
