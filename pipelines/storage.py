"""Storage access for local folders and s3:// URIs through one fsspec interface.

    fs, path = filesystem_for("s3://bucket/run", StorageConfig(endpoint_url=...))

Credentials are never passed here: s3fs reads them from the environment (or
the instance role), so they cannot leak into configs, logs or manifests.
"""

from __future__ import annotations

from potstill.schemas.generation import StorageConfig


def is_remote(uri: str) -> bool:
    """True for s3:// (and s3a://) URIs."""
    return uri.startswith(("s3://", "s3a://"))


def filesystem_for(uri: str, storage: StorageConfig | None = None):
    """The fsspec filesystem that serves `uri`, and the path within it."""
    import fsspec

    storage = storage or StorageConfig()
    if is_remote(uri):
        import s3fs

        client_kwargs = {}
        if storage.endpoint_url:
            client_kwargs["endpoint_url"] = storage.endpoint_url
        if storage.region:
            client_kwargs["region_name"] = storage.region
        fs = s3fs.S3FileSystem(
            anon=storage.anonymous,
            client_kwargs=client_kwargs,
            config_kwargs={"retries": {"max_attempts": storage.max_retries + 1, "mode": "adaptive"}},
            skip_instance_cache=True,
        )
        return fs, uri.split("://", 1)[1].rstrip("/")
    return fsspec.filesystem("file"), uri.rstrip("/") if uri not in ("/",) else uri
