"""The AsyncAPI document we export passes the official AsyncAPI parser (@asyncapi/parser, JavaScript)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.export import asyncapi_document, dump

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
PARSER_VERSION = "3.6.6"
PARSER_DIR = ROOT / ".services" / f"asyncapi-parser-{PARSER_VERSION}"


def _parser() -> Path:
    """Install the pinned parser once into .services/ (npm registry), then reuse it."""
    if not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for this interop test (Node.js)"
        PARSER_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(PARSER_DIR),
                               f"@asyncapi/parser@{PARSER_VERSION}"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return PARSER_DIR / "node_modules"


@pytest.mark.parametrize("namespace", ["ringrift", "cluster-b"])
def test_the_official_parser_accepts_our_asyncapi_document(namespace: str, tmp_path: Path) -> None:
    modules = _parser()
    document = tmp_path / "asyncapi.json"
    document.write_text(dump(asyncapi_document(namespace)))
    checked = subprocess.run(["node", str(Path(__file__).with_name("asyncapi_check.mjs")), str(document)],
                             capture_output=True, text=True, timeout=120, env={"PARSER_DIR": str(modules),
                                                                                "PATH": "/usr/bin:/bin"})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 errors, document parsed" in checked.stdout
