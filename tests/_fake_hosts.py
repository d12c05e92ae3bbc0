"""A local HTTP server (127.0.0.1) that plays the dataset hosts of ``neurodecode download``.

It emulates, on one port, the three listing APIs the downloader reads, with small pages so that
pagination is exercised:

- S3 ListObjectsV2 (``/s3/<bucket>/?list-type=2&prefix=..&delimiter=..&continuation-token=..``, XML) and
  object downloads (``/s3/<bucket>/<key>``); a file larger than ``multipart_bytes`` gets a multipart ETag
  (``<md5 of something>-2``, not its MD5), as S3 gives large uploads;
- the OSF API v2 (``/osf/v2/nodes/<node>/files/osfstorage/?folder=<path>&page=<n>``, JSON with
  ``attributes.extra.hashes``, ``relationships.files.links.related.href``, ``links.next``) and downloads
  (``/osf/download/<node>/<path>``, answered with a redirect to ``/osf/files/...`` as OSF does);
- the Hugging Face tree API (``/hf/api/datasets/<repo>/tree/main/<path>?recursive=true``, JSON, next page
  in a ``Link`` header) and downloads (``/hf/datasets/<repo>/resolve/main/<path>``).

Every download honours ``Range: bytes=N-`` (206 / 416). ``faults[(host, path)]`` makes a file misbehave:
``{"mode": "drop" | "corrupt" | "short" | "long" | "ignore_range" | "status", "times": k or None (always),
"status": code}``. Every request is logged in ``requests`` as ``(path, range header)``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

PAGE = 3  # entries per listing page


class FakeHosts:
    """The files each fake host serves, its faults and its request log."""

    def __init__(self, multipart_bytes: int = 200_000) -> None:
        self.s3: dict[str, dict[str, bytes]] = {}
        self.osf: dict[str, dict[str, bytes]] = {}
        self.hf: dict[str, dict[str, bytes]] = {}
        self.faults: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.multipart_bytes = multipart_bytes
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHosts:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mirror(self, bucket: str = "natural-scenes-dataset") -> dict[str, str]:
        """``base_url`` mapping that points every host kind here (``bucket`` for the S3 kind)."""
        return {"s3": f"{self.base}/s3/{bucket}", "osf": f"{self.base}/osf/v2", "hf": f"{self.base}/hf"}

    def fault(self, host: str, path: str, mode: str, times: int | None = 1, **kw) -> None:
        """Make ``path`` of ``host`` (``"s3"``, ``"osf"``, ``"hf"``) misbehave ``times`` times (None: always)."""
        self.faults[(host, path)] = {"mode": mode, "times": times, **kw}

    def take_fault(self, host: str, path: str) -> dict | None:
        with self._lock:
            f = self.faults.get((host, path))
            if f is None or f["times"] == 0:
                return None
            if f["times"] is not None:
                f["times"] -= 1
            return f

    def ranged(self, host: str, path: str) -> list[str | None]:
        """The Range headers of the downloads of ``path`` (None for a request without one)."""
        return [r for p, r in self.requests if p.endswith(urllib.parse.quote(path)) and "/tree/" not in p
                and "list-type" not in p]


def publish(files: dict[str, bytes], folder: Path, *, skip=lambda rel: False, prefix: str = "") -> None:
    """Add every file under ``folder`` to ``files`` under ``prefix + <relative path>``."""
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not skip(rel):
            files[prefix + rel] = p.read_bytes()


# -- the request handler ------------------------------------------------------------------------------------


def _handler(hosts: FakeHosts):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            hosts.requests.append((self.path, self.headers.get("Range")))
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
            try:
                if parts[0] == "s3":
                    self._s3(parts[1], "/".join(parts[2:]), query)
                elif parts[0] == "osf":
                    self._osf(parts[1:], query)
                elif parts[0] == "hf":
                    self._hf(parts[1:], query)
                else:
                    self._send(404, b"not found")
            except KeyError:
                self._send(404, b"no such file")

        def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream",
                  headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        # S3 ---------------------------------------------------------------------------------------------
        def _s3(self, bucket: str, key: str, query: dict) -> None:
            objects = hosts.s3[bucket]
            if key:
                return self._file("s3", key, objects[key])
            prefix, delim = query.get("prefix", ""), query.get("delimiter")
            keys = sorted(k for k in objects if k.startswith(prefix)
                          and not (delim and delim in k[len(prefix):]))
            start = int(query.get("continuation-token", "0") or 0)
            page, more = keys[start:start + PAGE], start + PAGE < len(keys)
            items = "".join(
                f"<Contents><Key>{escape(k)}</Key><ETag>&quot;{self._etag(objects[k])}&quot;</ETag>"
                f"<Size>{len(objects[k])}</Size><StorageClass>STANDARD</StorageClass></Contents>" for k in page)
            token = f"<NextContinuationToken>{start + PAGE}</NextContinuationToken>" if more else ""
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                   f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{bucket}</Name><Prefix>'
                   f"{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount><MaxKeys>{PAGE}</MaxKeys>"
                   f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{token}{items}</ListBucketResult>")
            self._send(200, xml.encode(), "application/xml")

        def _etag(self, data: bytes) -> str:
            if len(data) > hosts.multipart_bytes:
                return hashlib.md5(hashlib.md5(data).digest() * 2).hexdigest() + "-2"
            return hashlib.md5(data).hexdigest()

        # OSF --------------------------------------------------------------------------------------------
        def _osf(self, parts: list[str], query: dict) -> None:
            if parts[0] == "download":  # OSF redirects downloads to its file server
                return self._send(302, b"", headers={"Location": "/osf/files/" + "/".join(
                    urllib.parse.quote(p) for p in parts[1:])})
            if parts[0] == "files":
                return self._file("osf", "/".join(parts[2:]), hosts.osf[parts[1]]["/".join(parts[2:])])
            node, folder = parts[2], query.get("folder", "")
            files = hosts.osf[node]
            children: dict[str, str] = {}
            for path in files:
                if path.startswith(folder):
                    head = path[len(folder):].split("/", 1)
                    children[head[0]] = "folder" if len(head) > 1 else "file"
            names = sorted(children)
            page = int(query.get("page", "1"))
            chunk = names[(page - 1) * PAGE:page * PAGE]
            api = f"{hosts.base}/osf/v2/nodes/{node}/files/osfstorage/"
            data = [self._osf_entry(api, node, folder, n, children[n], files) for n in chunk]
            more = page * PAGE < len(names)
            nxt = f"{api}?{urllib.parse.urlencode({'folder': folder, 'page': page + 1})}" if more else None
            body = json.dumps({"data": data, "links": {"next": nxt, "prev": None}, "meta": {"total": len(names)}})
            self._send(200, body.encode(), "application/vnd.api+json")

        def _osf_entry(self, api: str, node: str, folder: str, name: str, kind: str, files: dict) -> dict:
            path = folder + name
            attrs = {"kind": kind, "name": name, "materialized_path": "/" + path + ("/" if kind == "folder" else "")}
            entry = {"id": hashlib.md5(path.encode()).hexdigest()[:12], "type": "files", "attributes": attrs}
            if kind == "folder":
                href = f"{api}?{urllib.parse.urlencode({'folder': path + '/'})}"
                entry["relationships"] = {"files": {"links": {"related": {"href": href, "meta": {}}}}}
            else:
                data = files[path]
                attrs["size"] = len(data)
                attrs["extra"] = {"hashes": {"md5": hashlib.md5(data).hexdigest(),
                                             "sha256": hashlib.sha256(data).hexdigest()}}
                entry["links"] = {"download": f"{hosts.base}/osf/download/{node}/{urllib.parse.quote(path)}"}
            return entry

        # Hugging Face -----------------------------------------------------------------------------------
        def _hf(self, parts: list[str], query: dict) -> None:
            if parts[0] == "api":  # api/datasets/<owner>/<name>/tree/main[/path]
                repo, sub = "/".join(parts[2:4]), "/".join(parts[6:])
                return self._hf_tree(repo, sub, query)
            repo, path = "/".join(parts[1:3]), "/".join(parts[5:])  # datasets/<o>/<n>/resolve/main/<path>
            self._file("hf", path, hosts.hf[repo][path])

        def _hf_tree(self, repo: str, sub: str, query: dict) -> None:
            files = hosts.hf[repo]
            base = sub + "/" if sub else ""
            recursive = query.get("recursive") == "true"
            names = sorted(p for p in files if p.startswith(base) and (recursive or "/" not in p[len(base):]))
            start = int(query.get("cursor", "0"))
            page = names[start:start + PAGE]
            entries = [{"type": "file", "oid": hashlib.sha1(files[p]).hexdigest(), "size": len(files[p]),
                        "path": p, **({"lfs": {"oid": hashlib.sha256(files[p]).hexdigest(), "size": len(files[p]),
                                                "pointerSize": 130}} if p.endswith((".npy", ".npz")) else {})}
                       for p in page]
            headers = {}
            if start + PAGE < len(names):
                link = f"{hosts.base}/hf/api/datasets/{repo}/tree/main/{sub}?recursive=true&cursor={start + PAGE}"
                headers["Link"] = f'<{link}>; rel="next"'
            self._send(200, json.dumps(entries).encode(), "application/json", headers)

        # one file, with Range and faults ----------------------------------------------------------------
        def _file(self, host: str, path: str, data: bytes) -> None:
            fault = hosts.take_fault(host, path) or {}
            mode = fault.get("mode")
            if mode == "status":
                return self._send(fault.get("status", 503), b"unavailable")
            if mode == "short":
                data = data[:-1]
            elif mode == "long":
                data = data + b"\0"
            elif mode == "corrupt":
                data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
            rng = self.headers.get("Range")
            start = int(rng.split("=")[1].split("-")[0]) if rng and mode != "ignore_range" else 0
            if start >= len(data) and start:
                return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if mode == "drop":  # half the promised bytes, then the connection is cut
                self.wfile.write(body[:max(1, len(body) // 2)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler
