"""A loopback stand-in for the few Hugging Face Hub API endpoints that `create_repo` and `upload_folder` call.

Measured against huggingface_hub 1.x/2.x sources (hf_api.py, _commit_api.py), a push from the Trainer makes:

- ``POST /api/repos/create`` (JSON ``{"name", "organization"}``), answered with the repo URL;
- ``POST /api/validate-yaml`` when README.md is committed (checks the card's metadata);
- ``POST /api/models/{repo}/preupload/{revision}``: answered ``uploadMode: "regular"`` for every file, so that
  contents are inlined in the commit instead of going through LFS/Xet storage;
- ``POST /api/models/{repo}/commit/{revision}``: NDJSON, a header line then one ``{"key": "file"}`` line per
  file with base64 contents.

Every commit is recorded with its files' bytes. Any other request is answered 404 and listed in `unexpected`,
so a test can assert that nothing else was asked of the "Hub".
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Best-effort lookups huggingface_hub makes on its own and survives a 404 for (user-agent detection of AI agent
# harnesses, utils/_detect_agent.py): not part of the push, so not reported as unexpected.
IGNORED_GETS = {"/api/agent-harnesses"}
FAKE_TOKEN = "hf_fake_token_for_the_loopback_stub"  # not a credential: only ever sent to HubStub


@dataclass
class Commit:
    repo_id: str
    revision: str
    message: str
    files: dict[str, bytes] = field(default_factory=dict)


class HubStub:
    """Runs the stand-in on 127.0.0.1 (random port) in a thread: ``with HubStub() as hub: ... hub.url``."""

    def __init__(self, user: str = "tester"):
        self.user = user
        self.repos: list[str] = []
        self.commits: list[Commit] = []
        self.unexpected: list[str] = []
        self.validated_cards: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_GET(self):
                with hub._lock:
                    if self.path.split("?", 1)[0] not in IGNORED_GETS:
                        hub.unexpected.append(f"GET {self.path}")
                self._reply(404, {"error": "not served by HubStub"})

            def do_POST(self):
                path = self.path.split("?", 1)[0]
                body = self._body()
                parts = path.strip("/").split("/")
                with hub._lock:
                    if path == "/api/repos/create":
                        request = json.loads(body)
                        repo_id = f"{request.get('organization') or hub.user}/{request['name']}"
                        hub.repos.append(repo_id)
                        return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})
                    if path == "/api/validate-yaml":
                        hub.validated_cards.append(json.loads(body)["content"])
                        return self._reply(200, {})
                    if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(
                            200,
                            {
                                "files": [
                                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                                ]
                            },
                        )
                    if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                        repo_id, revision = f"{parts[2]}/{parts[3]}", parts[5]
                        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                        header = next(line["value"] for line in lines if line["key"] == "header")
                        commit = Commit(repo_id, revision, header["summary"])
                        for line in lines:
                            if line["key"] == "file":
                                assert line["value"]["encoding"] == "base64"
                                commit.files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                            elif line["key"] != "header":
                                hub.unexpected.append(f"commit operation {line['key']}")
                        hub.commits.append(commit)
                        oid = hashlib.sha1(body).hexdigest()
                        return self._reply(
                            200,
                            {
                                "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                                "commitOid": oid,
                                "pullRequestUrl": None,
                            },
                        )
                    hub.unexpected.append(f"POST {path}")
                self._reply(404, {"error": "not served by HubStub"})

        return Handler


@contextlib.contextmanager
def loopback_hub(monkeypatch):
    """Point huggingface_hub (and transformers' shared HfApi) at a HubStub on 127.0.0.1, online, never sending a
    token saved on this machine.

    conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported, so the module-level constants it read then
    are patched here; HF_ENDPOINT is set too for anything that reads the environment later."""
    import transformers
    from huggingface_hub import constants

    with HubStub() as stub:
        monkeypatch.setenv("HF_ENDPOINT", stub.url)
        monkeypatch.setattr(constants, "ENDPOINT", stub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)  # never send a saved token
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # rebuilt with the stub's endpoint
        yield stub
