"""A loopback stand-in for the Hugging Face Hub HTTP API, for tests.

It speaks enough of the Hub's API for the real `huggingface_hub`, `datasets` and `peft` clients to
create repos, upload (regular files inline in the commit, large or binary files through the Git LFS
batch API with the "basic" transfer, as the Hub does when Xet is disabled), list trees, and
download with the headers `hf_hub_download` relies on. Everything lives in memory; each commit gets
a sha. Tests read what happened from `requests`, `lfs_uploads` and `commits`.

    with HubStandIn(tokens={"hf_secret": "atlas-tester"}) as hub:
        ...  # point HF_ENDPOINT at hub.url
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_THRESHOLD = 10 * 1024 * 1024
"""Files at least this large go through LFS whatever their content (the Hub's rule)."""

DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.arrow",
        "*.bin",
        "*.gz",
        "*.h5",
        "*.npy",
        "*.onnx",
        "*.parquet",
        "*.pt",
        "*.pth",
        "*.safetensors",
        "*.tar",
        "*.zip",
        "*.png",
        "*.jpg",
    )
)

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_KNOWN_TASKS = {
    "text-generation",
    "text-classification",
    "question-answering",
    "summarization",
    "translation",
    "conversational",
    "token-classification",
    "text2text-generation",
    "reinforcement-learning",
}
_KNOWN_LICENSES = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "llama3.1", "other", "unknown"}
_KNOWN_LIBRARIES = {"peft", "transformers", "datasets", "sentence-transformers", "trl"}
_SIZE_CATEGORIES = {
    "unknown",
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
}  # the Hub's list
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}(/[A-Za-z0-9][\w.\-]{0,95})?")


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def git_blob_sha(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    content: bytes
    lfs_sha256: str | None  # set for files stored through LFS

    @property
    def oid(self) -> str:
        if self.lfs_sha256 is not None:
            return git_blob_sha(lfs_pointer(self.lfs_sha256, len(self.content)))
        return git_blob_sha(self.content)


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubStandIn:
    """A threaded HTTP server on 127.0.0.1 (free port) that behaves like the Hub for the clients.

    `tokens` maps accepted bearer tokens to user names. `force_status`, when set, makes every API
    request fail with that status, with a JSON body that echoes the request's Authorization header
    (the worst a server could do), so tests can prove that callers never surface it.
    """

    def __init__(self, tokens: dict[str, str]):
        self.tokens = dict(tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.lfs_uploads: list[tuple[str, int]] = []  # (sha256, size) of every LFS PUT
        self.commits: list[dict[str, Any]] = []  # every accepted commit: repo, sha, operations
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.force_status: int | None = None
        self.force_code: str | None = None  # with force_status: the X-Error-Code of the forced failures
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ storage

    def head(self, repo_type: str, repo_id: str, revision: str = "main") -> Commit:
        repo = self._repo(repo_type, repo_id, user=None, for_write=False, check_auth=False)
        return self._resolve(repo, revision)

    def file(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> StoredFile:
        return self.head(repo_type, repo_id, revision).files[path]

    def _new_commit(self, repo: Repo, parent: str | None, title: str, files: dict[str, StoredFile]) -> Commit:
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{title}\n{len(repo.commits)}\n".encode())
        for path in sorted(files):
            digest.update(f"{path} {files[path].oid}\n".encode())
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        commit = Commit(sha=digest.hexdigest(), parent=parent, title=title, date=now, files=files)
        repo.commits[commit.sha] = commit
        repo.branches["main"] = commit.sha
        return commit

    def _repo(self, repo_type: str, repo_id: str, user: str | None, for_write: bool, check_auth: bool = True) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        if check_auth and (repo.private or for_write) and user != repo_id.split("/")[0]:
            if for_write and not repo.private:
                raise HubError(403, f"You don't have the rights to write to {repo_id}")
            raise HubError(401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        sha = repo.branches.get(revision, revision if revision in repo.commits else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # ------------------------------------------------------------------ HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_HEAD(self) -> None:
                self._dispatch("HEAD")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def _dispatch(self, method: str) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with hub._lock:
                    hub.requests.append((method, split.path))
                try:
                    if hub.force_status is not None:
                        auth = self.headers.get("Authorization", "")
                        raise HubError(
                            hub.force_status, f"Internal error while handling a request with {auth!r}", hub.force_code
                        )
                    status, headers, payload = hub._route(
                        method, split.path, parse_qs(split.query), self.headers, body
                    )
                except HubError as err:
                    headers = {"Content-Type": "application/json"}
                    if hub.force_status is None:  # the forced errors echo secrets in the body only
                        headers["X-Error-Message"] = err.message
                    if err.code:
                        headers["X-Error-Code"] = err.code
                    status, payload = err.status, json.dumps({"error": err.message}).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(payload)

        return Handler

    def _user(self, headers: Any) -> str | None:
        auth = headers.get("Authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes):
        user = self._user(headers)
        with self._lock:
            if path == "/api/whoami-v2" and method == "GET":
                if user is None:
                    raise HubError(401, "Invalid credentials in Authorization header")
                return _json({"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
            if path == "/api/repos/create" and method == "POST":
                return self._create_repo(user, json.loads(body))
            if path == "/api/validate-yaml" and method == "POST":
                return self._validate_yaml(json.loads(body))
            if path.startswith("/__lfs/"):
                return self._lfs_transfer(method, path, body)
            match = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
            if match and method == "POST":
                repo = self._repo(_REPO_TYPES.get(match[1] or "models"), match[2], user, for_write=True)
                return self._lfs_batch(repo, json.loads(body))
            match = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?", path)
            if match:
                writes = method == "POST" and not (match[3] or "").startswith("paths-info")
                repo = self._repo(_REPO_TYPES[match[1]], match[2], user, for_write=writes)
                return self._repo_api(repo, method, match[3] or "", query, headers, body)
            match = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if match and method in ("GET", "HEAD"):
                repo = self._repo(_REPO_TYPES.get(match[1] or "models"), match[2], user, for_write=False)
                return self._resolve_file(repo, match[3], unquote(match[4]), headers)
        raise HubError(404, f"Not found: {method} {path}")

    def _create_repo(self, user: str | None, payload: dict[str, Any]):
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repository under {namespace}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        if (repo_type, repo_id) in self.repos:
            raise HubError(409, "You already created this repo")
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created=now)
        self.repos[(repo_type, repo_id)] = repo
        attrs = StoredFile(DEFAULT_GITATTRIBUTES.encode(), None)
        self._new_commit(repo, None, "initial commit", {".gitattributes": attrs})
        return _json({"url": f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}", "name": repo_id})

    @staticmethod
    def _validate_yaml(payload: dict[str, Any]):
        """The checks of the Hub's metadata validator that matter here."""
        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        if not match:
            return _json({"errors": [], "warnings": [{"message": "Empty or missing yaml metadata in repo card"}]})
        try:
            meta = yaml.safe_load(match[1]) or {}
        except yaml.YAMLError as err:
            return _json({"errors": [{"message": f"Invalid YAML: {err}"}]}, status=400)
        errors = []
        if not isinstance(meta, dict):
            errors.append("metadata must be a mapping")
            meta = {}
        for key in ("tags", "language", "task_categories", "datasets", "source_datasets"):
            value = meta.get(key)
            if value is not None and not (
                isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ):
                errors.append(f'"{key}" must be a string or an array of strings')
        license_ = meta.get("license")
        if license_ is not None and license_ not in _KNOWN_LICENSES:
            errors.append(f'"license" must be one of the known licenses, got {license_!r}')
        for task in meta.get("task_categories") or []:
            if task not in _KNOWN_TASKS:
                errors.append(f'"task_categories" has an unknown task {task!r}')
        for config in meta.get("configs") or []:
            if not isinstance(config, dict) or "config_name" not in config:
                errors.append('"configs" entries need a "config_name"')
        for size in _as_list(meta.get("size_categories")):
            if size not in _SIZE_CATEGORIES:
                errors.append(f'"size_categories" has an unknown value {size!r}')
        library = meta.get("library_name")
        if library is not None and library not in _KNOWN_LIBRARIES:
            errors.append(f'"library_name" must be a known library, got {library!r}')
        for name in _as_list(meta.get("base_model")) + _as_list(meta.get("datasets")):
            if not isinstance(name, str) or not _REPO_ID.fullmatch(name):
                errors.append(f'"base_model" and "datasets" must hold repo ids, got {name!r}')
        for entry in meta.get("model-index") or []:
            for result in entry.get("results") or []:
                if not {"task", "dataset", "metrics"} <= set(result) or not all(
                    "type" in m and "value" in m for m in result["metrics"]
                ):
                    errors.append('"model-index" results need a task, a dataset and metrics with a type and a value')
        if errors:
            return _json({"errors": [{"message": e} for e in errors]}, status=400)
        return _json({"errors": [], "warnings": []})

    def _repo_api(self, repo: Repo, method: str, rest: str, query: dict[str, list[str]], headers: Any, body: bytes):
        if method == "GET" and (rest == "" or rest.startswith("revision/")):
            commit = self._resolve(repo, rest.removeprefix("revision/") or "main")
            return _json(self._info(repo, commit))
        match = re.fullmatch(r"(tree|preupload|commit|paths-info|commits)/([^/]+)(?:/(.*))?", rest)
        if not match:
            raise HubError(404, f"Not found: {rest}")
        action, revision, sub = match[1], match[2], unquote(match[3] or "")
        if action == "commit" and method == "POST":
            if query.get("create_pr"):
                raise HubError(400, "Pull requests are not supported by the stand-in")
            return self._commit(repo, revision, body)
        commit = self._resolve(repo, revision)
        if action == "tree" and method == "GET":
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            expand = query.get("expand", ["false"])[0].lower() == "true"
            return _json(self._tree(commit, sub.strip("/"), recursive, expand))
        if action == "paths-info" and method == "POST":
            if headers.get("Content-Type", "").startswith("application/json"):
                form = json.loads(body)
                paths, expand = form.get("paths", []), bool(form.get("expand"))
            else:
                form = parse_qs(body.decode())
                paths, expand = form.get("paths", []), form.get("expand", ["false"])[0].lower() == "true"
            return _json(self._paths_info(commit, paths, expand))
        if action == "preupload" and method == "POST":
            return _json({"files": [self._upload_mode(commit, f) for f in json.loads(body)["files"]]})
        if action == "commits" and method == "GET":
            chain, sha = [], commit.sha
            while sha is not None:
                c = repo.commits[sha]
                chain.append({"id": c.sha, "title": c.title, "message": "", "authors": [], "date": c.date})
                sha = c.parent
            return _json(chain)
        raise HubError(404, f"Not found: {method} {rest}")

    def _info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        card = commit.files.get("README.md")
        card_data = None
        if card is not None:
            match = re.match(r"^---\s*\n(.*?)\n---", card.content.decode(errors="replace"), re.DOTALL)
            card_data = yaml.safe_load(match[1]) if match else None
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created,
            "lastModified": commit.date,
            "cardData": card_data,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    @staticmethod
    def _entry(commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        last = {"id": commit.sha, "title": commit.title, "date": commit.date}
        stored = commit.files.get(path)
        if stored is not None:
            entry: dict[str, Any] = {"type": "file", "oid": stored.oid, "size": len(stored.content), "path": path}
            if stored.lfs_sha256 is not None:
                pointer = lfs_pointer(stored.lfs_sha256, len(stored.content))
                entry["lfs"] = {"oid": stored.lfs_sha256, "size": len(stored.content), "pointerSize": len(pointer)}
        else:
            children = sorted(p for p in commit.files if p.startswith(path + "/"))
            tree_oid = hashlib.sha1("\n".join(f"{p} {commit.files[p].oid}" for p in children).encode()).hexdigest()
            entry = {"type": "directory", "oid": tree_oid, "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = last
        return entry

    def _tree(self, commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        prefix = f"{path}/" if path else ""
        if path and path not in commit.files and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{path} does not exist on this revision", "EntryNotFound")
        names: set[str] = set()
        for file_path in commit.files:
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                names.add(prefix + "/".join(parts[:depth]))
        return [self._entry(commit, name, expand) for name in sorted(names)]

    def _paths_info(self, commit: Commit, paths: list[str], expand: bool) -> list[dict[str, Any]]:
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files or any(p.startswith(path + "/") for p in commit.files):
                out.append(self._entry(commit, path, expand))
        return out

    @staticmethod
    def _upload_mode(commit: Commit, spec: dict[str, Any]) -> dict[str, Any]:
        path, size = spec["path"], int(spec["size"])
        sample = base64.b64decode(spec.get("sample", ""))
        attributes = commit.files.get(".gitattributes")
        patterns = [
            line.split()[0]
            for line in (attributes.content.decode() if attributes else "").splitlines()
            if "filter=lfs" in line
        ]
        name = path.rsplit("/", 1)[-1]
        tracked = any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)
        lfs = tracked or size >= LFS_THRESHOLD or _is_binary(sample)
        existing = commit.files.get(path)
        oid = None
        if existing is not None:
            oid = existing.lfs_sha256 or git_blob_sha(existing.content)
        return {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}

    def _lfs_batch(self, repo: Repo, payload: dict[str, Any]):
        if payload.get("operation") != "upload":
            raise HubError(400, "Only uploads are supported by the stand-in")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/__lfs/upload/{oid}/{size}", "header": {}},
                    "verify": {"href": f"{self.url}/__lfs/verify", "header": {}},
                }
            objects.append(entry)
        return _json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_transfer(self, method: str, path: str, body: bytes):
        match = re.fullmatch(r"/__lfs/upload/([0-9a-f]{64})/(\d+)", path)
        if match and method == "PUT":
            if hashlib.sha256(body).hexdigest() != match[1] or len(body) != int(match[2]):
                raise HubError(400, "LFS object does not match its oid and size")
            self.lfs_objects[match[1]] = body
            self.lfs_uploads.append((match[1], len(body)))
            return 200, {"ETag": f'"{match[1]}"'}, b""
        if path == "/__lfs/verify" and method == "POST":
            payload = json.loads(body)
            stored = self.lfs_objects.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                raise HubError(404, "LFS object not found")
            return _json({"message": "verified"})
        raise HubError(404, f"Not found: {method} {path}")

    def _commit(self, repo: Repo, revision: str, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        head = self._resolve(repo, revision)
        if header.get("parentCommit") and header["parentCommit"] != head.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        operations = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                content = base64.b64decode(value["content"])
                if _is_binary(content[:512]) or len(content) >= LFS_THRESHOLD:
                    raise HubError(
                        400,
                        f"Your push was rejected because it contains binary files ({path}). "
                        "Please use https://huggingface.co/docs/hub/xet to store binary files.",
                    )
                files[path] = StoredFile(content, None)
            elif key == "lfsFile":
                content = self.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded")
                files[path] = StoredFile(content, value["oid"])
            elif key == "deletedFile":
                files.pop(path, None)
            elif key == "deletedFolder":
                for existing in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                    del files[existing]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
            operations.append((key, path))
        commit = self._new_commit(repo, head.sha, header.get("summary") or "commit", files)
        self.commits.append(
            {"repo": repo.repo_id, "type": repo.repo_type, "sha": commit.sha, "operations": operations}
        )
        url = f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.sha}"
        return _json({"commitUrl": url, "commitOid": commit.sha, "pullRequestUrl": None, "success": True})

    def _resolve_file(self, repo: Repo, revision: str, path: str, headers: Any):
        commit = self._resolve(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = stored.content
        out = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if stored.lfs_sha256 is not None:
            out.update(
                {
                    "ETag": f'"{stored.lfs_sha256}"',
                    "X-Linked-Etag": f'"{stored.lfs_sha256}"',
                    "X-Linked-Size": str(len(content)),
                }
            )
        else:
            out["ETag"] = f'"{stored.oid}"'
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("Range", "") or "")
        if match:
            start = int(match[1])
            end = int(match[2]) if match[2] else len(content) - 1
            if start >= len(content):
                raise HubError(416, "Requested range not satisfiable")
            end = min(end, len(content) - 1)
            out["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        out["Content-Length"] = str(len(content))
        return status, out, content


def _is_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(sample) - 4  # a multi-byte character cut at the end of the sample is still text
    return False


def _json(payload: Any, status: int = 200, content_type: str = "application/json"):
    return status, {"Content-Type": content_type}, json.dumps(payload).encode()
