"""tuspyserver as its README sets it up (a FastAPI app with its router), for
benchmarks/peers.py; served by uvicorn from the peers' own venv (see setup-peers).
The files go to $TUSPY_FILES_DIR."""

import os

from fastapi import FastAPI  # type: ignore[import-not-found]  # the peers venv only
from tuspyserver import create_tus_router  # type: ignore[import-not-found]

app = FastAPI()
app.include_router(create_tus_router(prefix="files", files_dir=os.environ["TUSPY_FILES_DIR"]))
