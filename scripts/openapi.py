"""Write (or check) docs/openapi.json: the OpenAPI schema of `promptreg server`.

  python scripts/openapi.py          rewrite docs/openapi.json from the application
  python scripts/openapi.py --check  exit 1 when docs/openapi.json differs (tests/test_server_app.py runs it)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "openapi.json"


def schema_text() -> str:
    sys.path.insert(0, str(ROOT))
    from promptreg.server.app import create_app
    from promptreg.server.config import ServerConfig
    from promptreg.services.registry import Registry

    with tempfile.TemporaryDirectory() as home:
        app = create_app(Registry(home=home), ServerConfig(sync_interval_s=0))
        return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = schema_text()
    if "--check" in argv:
        if not DOC.is_file() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is out of date: run python scripts/openapi.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
