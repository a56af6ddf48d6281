"""TLS at gunicorn: GUNICORN_CERTFILE and GUNICORN_KEYFILE come as a pair, or not at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PORTAL_PORTS, dockerfile_cmd, env_with, stage_image
from tests.tls import make_certificate

pytestmark = pytest.mark.gunicorn


@pytest.mark.parametrize("only", ["GUNICORN_CERTFILE", "GUNICORN_KEYFILE"])
def test_one_tls_file_without_the_other_is_refused_at_start(tmp_path: Path, only: str) -> None:
    certificate = make_certificate(tmp_path / "tls")
    app_dir = stage_image(tmp_path / "image")
    path = certificate.cert if only == "GUNICORN_CERTFILE" else certificate.key
    env = env_with(GUNICORN_BIND=f"127.0.0.1:{PORTAL_PORTS[2]}", SESSION_BACKEND="redis",
                   REDIS_URL="redis://127.0.0.1:1/0", **{only: str(path)})
    result = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), *dockerfile_cmd()[1:]], cwd=app_dir,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "GUNICORN_CERTFILE and GUNICORN_KEYFILE go together" in result.stderr
    assert "Traceback" not in result.stderr
