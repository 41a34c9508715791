"""Glance image data: a streamed, checksummed upload and download (image API v2).

The upload is a chunked ``PUT /v2/images/{id}/file`` from an async generator: the file is
never held in memory, and between chunks the activity heartbeats (and so sees a cancel).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from core.errors import IntegrityError, ProviderTransient
from providers.openstack.cloud import Cloud

CHUNK = 4 * 1024 * 1024


async def upload(cloud: Cloud, image_id: str, path: Path, *,
                 on_progress: Callable[[int, int], Awaitable[None]],
                 bandwidth_limit: int | None = None) -> dict[str, str]:
    """Stream ``path`` into the queued image; returns the local ``md5`` and ``sha512`` digests."""
    import httpx

    base = await asyncio.to_thread(cloud.endpoint, "image")
    token = await asyncio.to_thread(cloud.token)
    total = path.stat().st_size
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()

    async def body() -> AsyncIterator[bytes]:
        done, started = 0, time.monotonic()
        with open(path, "rb") as f:
            while block := await asyncio.to_thread(f.read, CHUNK):
                md5.update(block)
                sha512.update(block)
                done += len(block)
                if bandwidth_limit:
                    ahead = done / bandwidth_limit - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                yield block
                await on_progress(done, total)

    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=3600.0)) as http:
        r = await http.put(f"{base}/v2/images/{image_id}/file", content=body(),
                           headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"})
    if r.status_code not in (200, 201, 204):
        raise ProviderTransient(f"Glance refused the data of image {image_id} (HTTP {r.status_code})")
    return {"md5": md5.hexdigest(), "sha512": sha512.hexdigest()}


def verify(image: dict[str, Any], digests: dict[str, str], size: int) -> None:
    """Glance's own checksum, multihash and size must equal what was sent."""
    if image.get("checksum") and image["checksum"] != digests["md5"]:
        raise IntegrityError(f"Glance image {image['id']} has checksum {image['checksum']}, sent {digests['md5']}")
    if image.get("os_hash_algo") == "sha512" and image.get("os_hash_value") != digests["sha512"]:
        raise IntegrityError(f"Glance image {image['id']}: sha512 differs from what was sent")
    if image.get("size") is not None and int(image["size"]) != size:
        raise IntegrityError(f"Glance image {image['id']} holds {image['size']} bytes, sent {size}")


def download(cloud: Cloud, image_id: str, target: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """Stream an image's data to ``target`` (written under a temporary name); returns its md5."""
    import httpx

    base, token = cloud.endpoint("image"), cloud.token()
    partial = target.with_suffix(target.suffix + ".partial")
    md5 = hashlib.md5(usedforsecurity=False)
    with httpx.stream("GET", f"{base}/v2/images/{image_id}/file", headers={"X-Auth-Token": token},
                      timeout=httpx.Timeout(60.0, read=3600.0)) as r:
        if r.status_code != 200:
            raise ProviderTransient(f"Glance could not send image {image_id} (HTTP {r.status_code})")
        with open(partial, "wb") as f:
            for chunk in r.iter_bytes(CHUNK):
                md5.update(chunk)
                f.write(chunk)
                if on_chunk:
                    on_chunk(len(chunk))
    partial.rename(target)
    return md5.hexdigest()
