"""`coord schema export|check` run as a user runs them (subprocess, no services needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from schemas.envelope import RouterEvent, encode

COORD = str(Path(sys.executable).with_name("coord"))


def _coord(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([COORD, *args], input=stdin, capture_output=True, timeout=60)


def test_export_jsonschema_to_a_file_validates_real_events(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    done = _coord("schema", "export", "--format", "jsonschema", "-o", str(out))
    assert done.returncode == 0, done.stderr
    schema = json.loads(out.read_text())
    Draft202012Validator.check_schema(schema)
    event = json.loads(encode(RouterEvent.new("DATA_SYNC_COMPLETED", {"games_synced": 3})))
    assert not list(Draft202012Validator(schema).iter_errors(event))
    event["payload"]["games_synced"] = "x"
    assert list(Draft202012Validator(schema).iter_errors(event))


def test_export_asyncapi_to_stdout_uses_the_namespace() -> None:
    done = _coord("schema", "export", "--format", "asyncapi", "--namespace", "lab")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["asyncapi"].startswith("3.") and "lab.events" in json.dumps(doc["channels"])


def test_check_reports_problems_in_one_line_and_fails() -> None:
    sync = b'{"event_type": "DATA_SYNC_COMPLETED", "payload": {"games_synced": %s}}'
    bad = _coord("schema", "check", "-", stdin=sync % b'"x"')
    good = _coord("schema", "check", "-", stdin=sync % b"3")
    broken = _coord("schema", "check", "-", stdin=b"{not json")
    assert bad.returncode == 1 and b"games_synced" in bad.stderr and b"Traceback" not in bad.stderr
    assert good.returncode == 0 and good.stdout.strip() == b"ok"
    assert broken.returncode == 1 and b"Traceback" not in broken.stderr
